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

.PHONY: demo test bench clean peer-venv

$(STAMP): pyproject.toml setup.py $(wildcard csrc/*)
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VPY) -m quichsd demo

test: $(STAMP) peer-venv
	$(VPY) -m pytest -q tests

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

bench: $(STAMP)
	$(VPY) bench/handshake.py
	$(VPY) bench/udp_handshake.py

clean:
	rm -rf $(VENV) $(PEER_VENV) build *.egg-info quichsd/_quic_abi*.so quichsd/_sysabi*.so
