PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The picoquic interop peer (tests/interop/picoquic_peer.py) runs in its own venv:
# aiopquic needs Python >= 3.12, the project venv may be older.
PEER_VENV ?= .venv-peer
AIOPQUIC_VERSION := 0.6.1
PEER_STAMP := $(PEER_VENV)/.aiopquic-$(AIOPQUIC_VERSION)
PEER_PYTHONS ?= $(shell command -v python3.12) $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python)

.PHONY: demo lint test bench clean peer-venv system-deps qemu qemu-deps soak fuzz fuzz-deps

$(STAMP): pyproject.toml setup.py $(wildcard csrc/*)
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VPY) -m quichsd demo

# Static checks first: ruff on the whole tree, mypy --strict on quichsd/, and the shape limits
# (functions of at most 60 lines, radon rank C at worst; tests/shape.py).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VPY) -m mypy
	$(VPY) -m tests.shape quichsd

test: $(STAMP) lint peer-venv system-deps
	$(VPY) -m pytest -q tests
	$(VPY) -m pytest -q -m slow tests

# No Python 3.12 here is not an error: the picoquic tests then skip and say why.
# The first candidate that really runs 3.12+ wins (a pyenv shim may exist and refuse).
peer-venv:
	@if [ -f $(PEER_STAMP) ] && $(PEER_VENV)/bin/python -c 'import aiopquic' 2>/dev/null; then exit 0; fi; \
	py=""; for c in $(PEER_PYTHONS); do \
	  if "$$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then py="$$c"; break; fi; \
	done; \
	if [ -z "$$py" ]; then \
	  echo "peer-venv: no Python >= 3.12 found (python3.12 on PATH or $(HOME)/.pyenv/versions/3.12*/bin/python);" \
	       "aiopquic needs it, so the picoquic interop tests will skip"; \
	  exit 0; \
	fi; \
	echo "peer-venv: $$py -> $(PEER_VENV) with aiopquic==$(AIOPQUIC_VERSION)"; \
	rm -rf $(PEER_VENV) && "$$py" -m venv $(PEER_VENV) && \
	$(PEER_VENV)/bin/python -m pip install -q aiopquic==$(AIOPQUIC_VERSION) && \
	touch $(PEER_STAMP) || { rm -rf $(PEER_VENV); echo "peer-venv: installing aiopquic failed"; exit 1; }

# Programs the tests start for real: dbus-daemon (the D-Bus tests start a private bus);
# gnutls-serv and gnutls-cli from gnutls-bin (tests/tcp/: TLS over TCP against GnuTLS).
# Installed with apt-get where missing and we may; otherwise those tests skip and say why.
SYSTEM_DEPS := dbus-daemon:dbus-daemon gnutls-cli:gnutls-bin
system-deps:
	@for d in $(SYSTEM_DEPS); do tool=$${d%%:*}; pkg=$${d#*:}; \
	command -v $$tool >/dev/null 2>&1 && continue; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "system-deps: installing $$pkg"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$pkg >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$pkg >/dev/null; } || \
	  echo "system-deps: could not install $$pkg; the tests needing $$tool will skip"; \
	else echo "system-deps: $$tool missing and not root with apt-get; the tests needing it will skip"; fi; \
	done

# The real-kernel tier (tests/qemu/run.py): Debian's kernel under QEMU, the guest suite in one boot.
qemu: $(STAMP) qemu-deps
	$(VPY) -m tests.qemu.run

# What the QEMU tier runs on the host: qemu (TCG), busybox-static for the initramfs, kmod for
# depmod/modinfo, make and gcc for our test module; keyutils in the guest (it shares our root).
QEMU_DEPS := qemu-system-x86_64:qemu-system-x86 busybox:busybox-static depmod:kmod keyctl:keyutils \
	make:make gcc:gcc
qemu-deps:
	@missing=""; for d in $(QEMU_DEPS); do command -v $${d%%:*} >/dev/null 2>&1 || \
	  [ -x /usr/sbin/$${d%%:*} ] || [ -x /sbin/$${d%%:*} ] || missing="$$missing $${d#*:}"; done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "qemu-deps: missing$$missing (install them; needs root with apt-get)"; exit 1; fi; \
	echo "qemu-deps: installing$$missing"; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1 || \
	{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; }

bench: $(STAMP)
	$(VPY) bench/handshake.py
	$(VPY) bench/udp_handshake.py
	$(VPY) bench/daemon.py

clean:
	rm -rf $(VENV) $(PEER_VENV) build *.egg-info quichsd/_quic_abi*.so quichsd/_sysabi*.so quichsd/_ktls*.so

# Coverage-guided fuzzing (fuzz/, atheris): every target for FUZZ_SECONDS each, a line per
# target (executions, coverage, crashes) and a summary; a crash fails and leaves the input in
# fuzz/artifacts/<target>/. FUZZ_TARGETS picks some (default: all).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
# The same requirement as pyproject's `fuzz` extra; installed into the venv only.
ATHERIS := atheris>=2.3.0
fuzz: $(STAMP) fuzz-deps
	$(VPY) -m fuzz.run --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-deps: $(STAMP)
	@$(VPY) -c 'import atheris' 2>/dev/null || $(VPY) -m pip install -q '$(ATHERIS)'

# Soak: handshakes and small echo transfers through `quichsd server` (simulation) and
# through the daemon (its request source injected, as tests/daemon runs it) for SOAK_MINUTES;
# prints RSS, fds, threads and handshake rates, fails on a failed handshake or on growth.
SOAK_MINUTES ?= 30
soak: $(STAMP)
	$(VPY) bench/soak.py --minutes $(SOAK_MINUTES)
