#!/usr/bin/env bash
# `make deb`: the Debian 12 packages vrrpd and csserver, built from this checkout by dpkg-buildpackage.
#
#   scripts/build-deb.sh [OUTDIR]     (default OUTDIR: dist/)
#
# It installs Debian's build tools when they are missing (dpkg-dev, debhelper, dh-python), copies what the
# packages are made of (debian/ and the files it names; never tests, labs or venvs) to build/deb/, and builds
# there, so dpkg-buildpackage's output never lands beside the checkout. A build is skipped when OUTDIR
# already holds the packages of exactly these files (OUTDIR/.source-sha256). Prints the .deb paths.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/dist}
tools=(dpkg-dev debhelper dh-python python3)
# What goes into the packages: debian/*.install, *.manpages, *.examples and *.docs name nothing else.
inputs=(debian vrrpd csserver daemonkit systemd man completions conf README.md)

missing=()
for pkg in "${tools[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo ">> installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cd "$repo"
# Tracked and new files, never ignored ones (__pycache__, .venv): the same set on a fresh clone.
# (A tracked file deleted in the working tree is left out, as the build would not see it either.)
files=$(git ls-files -co --exclude-standard -- "${inputs[@]}" | while IFS= read -r f; do [ -e "$f" ] && echo "$f"; done |
  LC_ALL=C sort)
hash=$( (echo "$files"; echo "$files" | tr '\n' '\0' | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1)
version=$(dpkg-parsechangelog -l debian/changelog -S Version)
debs=("$out/vrrpd_${version}_all.deb" "$out/csserver_${version}_all.deb")

if [ "$(cat "$out/.source-sha256" 2>/dev/null)" = "$hash" ] && [ -f "${debs[0]}" ] && [ -f "${debs[1]}" ]; then
  echo ">> packages up to date in $out" >&2
  printf '%s\n' "${debs[@]}"
  exit 0
fi

build=$repo/build/deb
rm -rf "$build"
mkdir -p "$build/src" "$out"
echo "$files" | tar -cf - -T - | tar -xf - -C "$build/src"
echo ">> dpkg-buildpackage (log: $build/build.log)" >&2
if ! (cd "$build/src" && dpkg-buildpackage -b -us -uc) >"$build/build.log" 2>&1; then
  tail -n 40 "$build/build.log" >&2
  echo "build-deb: dpkg-buildpackage failed (log: $build/build.log)" >&2
  exit 1
fi
rm -f "$out"/vrrpd_*.deb "$out"/csserver_*.deb
mv "$build"/*.deb "$out"/
echo "$hash" >"$out/.source-sha256"
printf '%s\n' "${debs[@]}"
