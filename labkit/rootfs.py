"""Debian 12 root file systems for the lab's systemd hosts: debootstrap from Debian's packages, cached by content.

    python -m labkit.rootfs dist/vrrpd_*.deb dist/csserver_*.deb     # prints the cached tree's path

A tree holds minbase, systemd (the host's init) and exactly the packages that the given .debs Depend on and
Recommend (what `apt install ./FILE.deb` would fetch), so a dependency missing from debian/control shows up
as a daemon that fails in the lab, and the .debs install offline (lab hosts reach no mirror). It lives in
CACHE/<key>, key = a hash of that package list and of this file (the recipe), is built at most once per key
(under a lock, in a scratch directory renamed into place when complete) and is never written to afterwards:
hosts boot it read-only with a tmpfs overlay (labkit.systemd_host). Trees unused for PRUNE_DAYS are deleted.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("VRRPD_LAB_ROOTFS_CACHE", "/var/cache/vrrpd-lab/rootfs"))
MIRROR = os.environ.get("VRRPD_LAB_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
# The host's init, and man-db, which `systemd-analyze verify` asks for the units' Documentation= pages;
# minbase brings apt and dpkg.
BASE = ("systemd", "man-db")
OWN = {"vrrpd", "csserver"}  # the packages under test are installed by the tests, never baked in
# Timers and the console login of a server's life that only add noise and load to a short-lived lab host.
MASKED = ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
          "fstrim.timer", "systemd-tmpfiles-clean.timer", "console-getty.service")
PRUNE_DAYS = 14
COMPLETE = ".complete"  # written last: a tree without it is never used
BUILD_TIMEOUT_S = 1200


def dependencies(debs: list[Path]) -> list[str]:
    """The packages that `debs` Depend on and Recommend, by name (first alternative, no version), sorted."""
    names: set[str] = set()
    for deb in debs:
        fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends", "Recommends"], capture_output=True,
                                text=True, check=True, timeout=30).stdout
        for line in fields.splitlines():
            _, _, value = line.partition(":")
            for relation in value.split(","):
                first = relation.split("|")[0].strip()
                name = re.split(r"[\s(:]", first, maxsplit=1)[0]
                if name:
                    names.add(name)
    return sorted(names - OWN)


def key(packages: list[str]) -> str:
    recipe = Path(__file__).read_bytes()
    text = json.dumps({"suite": SUITE, "packages": sorted(set(BASE) | set(packages))}, sort_keys=True)
    return hashlib.sha256(text.encode() + recipe).hexdigest()[:16]


def ensure(debs: list[Path], cache: Path = CACHE, log=sys.stderr) -> Path:
    """The cached tree for `debs`' dependencies: built when missing, then reused as it is."""
    packages = sorted(set(BASE) | set(dependencies(debs)))
    tree = cache / key(packages)
    if (tree / COMPLETE).exists():
        os.utime(tree / COMPLETE)  # marks it used, for pruning
        return tree
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same tree: wait for it
        for stale in cache.glob(".build-*"):  # a build killed midway (the lock is ours: none is running)
            _unmount_under(stale)
            shutil.rmtree(stale, ignore_errors=True)
        if not (tree / COMPLETE).exists():
            _build(tree, packages, log)
        _prune(cache, keep=tree)
    return tree


def _build(tree: Path, packages: list[str], log) -> None:
    scratch = tree.with_name(f".build-{tree.name}-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    started = time.monotonic()
    print(f">> debootstrap {SUITE} into {tree} ({len(packages)} packages and their dependencies)", file=log)
    args = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
            f"--cache-dir={_debs_cache(tree.parent)}", SUITE, str(scratch), MIRROR]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if proc.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({proc.returncode}):\n{_tail(proc.stdout + proc.stderr)}")
        _customise(scratch)
        (scratch / COMPLETE).write_text(json.dumps({"packages": packages, "built": time.time()}) + "\n")
        scratch.rename(tree)
    finally:
        _unmount_under(scratch)  # debootstrap mounts /proc and /sys in the target, and may leave them on failure
        shutil.rmtree(scratch, ignore_errors=True)
    print(f">> root file system ready in {time.monotonic() - started:.0f} s", file=log)


def _customise(root: Path) -> None:
    """What makes one tree fit every lab host: no identity of its own, nothing running that the lab does not."""
    (root / "etc/machine-id").write_text("")  # empty: systemd uses the container's random id, per boot
    (root / "etc/hostname").unlink(missing_ok=True)  # keeps the name systemd-nspawn --hostname sets
    for unit in MASKED:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()  # debootstrap's downloads (also kept in the cache's debs/ for the next build)


def _debs_cache(cache: Path) -> Path:
    path = cache / "debs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _unmount_under(path: Path) -> None:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as info:
        points = [line.split()[4] for line in info]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)


def _prune(cache: Path, keep: Path) -> None:
    cutoff = time.time() - PRUNE_DAYS * 86400
    for tree in cache.iterdir():
        marker = tree / COMPLETE
        if tree != keep and marker.exists() and marker.stat().st_mtime < cutoff:
            shutil.rmtree(tree, ignore_errors=True)


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.rootfs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("debs", nargs="+", type=Path, help="the packages whose dependencies the tree holds")
    args = parser.parse_args(argv)
    print(ensure(args.debs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
