# Everything a fresh Debian machine (as root) needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEBS := keepalived frr tshark iproute2 nftables postgresql procps curl systemd man-db bash-completion \
        debootstrap systemd-container lintian
STAMP := $(VENV)/.installed

.PHONY: test unit lab lint demo bench chaos deps venv postgres deb rootfs clean

deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo ">> installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \
	    trap 'rm -f /usr/sbin/policy-rc.d' EXIT; \
	  fi; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@echo ">> creating $(VENV) and installing the project"
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@$(PY) -m pip install -q -e '.[test,bench]' > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@touch $(STAMP)

venv: $(STAMP)

postgres: deps
	@scripts/test-postgres.sh start

# The Debian 12 packages (dist/vrrpd_*.deb, dist/csserver_*.deb), built with dpkg-dev and debhelper.
deb:
	@scripts/build-deb.sh

# The lab's systemd hosts boot this debootstrap tree, cached under /var/cache/vrrpd-lab (built once per content).
rootfs: deps venv deb
	@$(PY) -m labkit.rootfs dist/vrrpd_*.deb dist/csserver_*.deb >/dev/null

test: deps venv postgres deb rootfs
	@set -a; . scripts/test-postgres.env; set +a; \
	  $(PY) -m pytest -q $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest -q tests/pure $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check vrrpd csserver daemonkit labkit bench tests

lab: deps venv deb rootfs
	$(PY) -m pytest -q tests/lab $(PYTEST_ARGS)

demo: deps venv
	@$(PY) -m labkit.demo

bench: deps venv
	@$(PY) -m bench.run

chaos: deps venv postgres
	@set -a; . scripts/test-postgres.env; set +a; $(PY) -m labkit.chaos --full

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
