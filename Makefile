# The two commands that matter: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
# torch: the CPU build pinned here is the one that installs without a multi-GB CUDA download.
TORCH_CPU ?= torch==2.13.0

.PHONY: demo test install install-test browser servers lint soak clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PIP) -e '.[embedded]'
	touch $@

# llamacpp: llama-cpp-python compiles llama.cpp once (minutes); pip caches the wheel.
$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PIP) $(TORCH_CPU)
	$(PIP) -e '.[embedded,orpheus,llamacpp,dev,livekit,pipecat]'
	@$(MAKE) --no-print-directory browser
	@$(MAKE) --no-print-directory servers
	touch $@ $(VENV)/.demo-installed

# The playground's browser test drives Debian's Chromium (never a downloaded browser).
# Installed when we may (root with apt); otherwise that test is skipped, saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium: the browser test will be skipped"; \
	  else echo "chromium is not installed: the browser test will be skipped"; fi; }

# The proxy benchmark runs Debian's nginx beside the gateway (and counts system calls with
# strace); the shared-quota tests Debian's redis-server; the worker-discovery tests dnsmasq as
# a DNS server. Installed when we may (root with apt); otherwise those tests and that
# benchmark path are skipped, saying why.
SERVER_PACKAGES := nginx-light redis-server dnsmasq-base strace
servers:
	@missing=; for b in nginx redis-server dnsmasq strace; do \
	  command -v $$b >/dev/null 2>&1 || [ -x /usr/sbin/$$b ] || [ -x /usr/bin/$$b ] || missing="$$missing $$b"; done; \
	[ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SERVER_PACKAGES) >/dev/null) \
	      || echo "could not install$$missing: their tests will be skipped"; \
	  else echo "not installed:$$missing: their tests will be skipped"; fi; }

install: $(VENV)/.demo-installed

install-test: $(VENV)/.test-installed

demo: $(VENV)/.demo-installed
	$(VENV)/bin/orpheus-tts demo --output hello.wav

test: $(VENV)/.test-installed
	$(PY) -m pytest -m "not slow"

lint: $(VENV)/.test-installed
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench
	$(PY) -m mypy

soak: $(VENV)/.test-installed
	$(PY) -m pytest -m slow

clean:
	rm -rf $(VENV) build dist *.egg-info
