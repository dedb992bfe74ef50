# dnsd: `make run` serves the example cluster on 127.0.0.1:1053; `make test` runs the whole suite.
# Both set up everything on a fresh machine: system packages (apt-get when root), the venv, the package.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TEST_TOOLS := dig:bind9-dnsutils kdig:knot-dnsutils nslookup:bind9-dnsutils nsd:nsd unbound:unbound openssl:openssl dnsmasq:dnsmasq-base chromium:chromium promtool:prometheus etcd:etcd-server etcdctl:etcd-client
BENCH_TOOLS := dnsperf:dnsperf nsd:nsd taskset:util-linux unbound:unbound knotd:knot

.PHONY: run setup test lint unit bench system-test-deps system-bench-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { echo "error: '$(PYTHON) -m venv' failed: install the Debian package python3-venv"; exit 1; }

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# Install missing command-line tools: apt-get when we can, else a clear message naming the package.
define ensure_tools
	@missing=""; for pair in $(1); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && { [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }; then \
	    echo "installing:$$missing"; \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "error: missing Debian packages:$$missing (install them, e.g. apt-get install$$missing)"; exit 1; fi; \
	fi
endef

system-test-deps:
	$(call ensure_tools,$(TEST_TOOLS))

system-bench-deps:
	$(call ensure_tools,$(BENCH_TOOLS))

run: $(STAMP)
	$(BIN)/dnsd --config config/dnsd.yaml

lint: $(STAMP)
	$(BIN)/ruff check dnsd tests bench
	$(BIN)/mypy dnsd

# Everything `make test` needs installed (the only step that needs the network: CI runs it, then the tests offline).
setup: $(STAMP) system-test-deps

test: $(STAMP) system-test-deps lint
	$(BIN)/python -m pytest -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

# SCENARIO: cluster (dnsd and NSD at SERVICES services; Knot too above 1,000), cache (dnsd and Unbound forwarding to
# NSD, cache hits), iterative (dnsd and Unbound resolving cold from a loopback root on port 53: root only), or all.
# SERVICES: 1000 (the default: the regression guard), 10000, 100000, a comma list, or all (1000,10000,100000).
# `make bench` = cluster at 1,000, cache, iterative; `make bench SERVICES=100000` = the cluster scenario at that size;
# `make bench SERVICES=all` = every scenario (budget: 10 minutes). See bench/README.md.
SCENARIO ?=
SERVICES ?=
bench: $(STAMP) system-bench-deps
	PATH="$(CURDIR)/$(BIN):$$PATH" SCENARIO="$(SCENARIO)" SERVICES="$(SERVICES)" bash bench/run.sh

clean:
	rm -rf $(VENV) bench/out .pytest_cache .mypy_cache .ruff_cache

# Fuzz the header check, the parser and the engine for FUZZ_SECONDS (tests/fuzz/fuzz_engine.py): coverage-guided
# with atheris when PyPI has a wheel for this Python, else structured fuzzing. Failing inputs go to tests/fuzz/out/.
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz: $(STAMP)
	@$(BIN)/python -c "import atheris" 2>/dev/null || $(BIN)/pip install -q --only-binary=atheris atheris || \
	  echo "atheris cannot be installed for this Python: structured fuzzing without coverage guidance"
	$(BIN)/python tests/fuzz/fuzz_engine.py --seconds $(FUZZ_SECONDS)
