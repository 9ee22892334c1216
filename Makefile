# The two commands of the README: `make dev` runs Blocks, `make test` runs every check.
# Both install from the lock files (every package pinned, with its hashes, for every platform),
# then Blocks itself without resolving again: installs are the same everywhere.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements.txt
TEST_LOCK := requirements-test.txt
BENCH_LOCK := requirements-bench.txt
# The resolver that writes the locks (`make lock`); installing from them needs only pip.
UV_VERSION := 0.13.8
# `make lock` keeps every pin the constraints still allow; `make lock LOCK_FLAGS=--upgrade`
# moves everything to the newest allowed versions.
LOCK_FLAGS ?=
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command "make lock" $(LOCK_FLAGS)

.PHONY: dev test lint audit lock bench clean system-packages

# Debian packages the test suite drives for real (nginx in front of the API, for TLS termination
# and forwarded addresses; chromium, which Playwright drives to test /docs in a browser; xmlsec1,
# which checks SAML signatures; npm, which installs the OpenID Provider of the SSO tests),
# installed when missing: each command's package alone (a machine whose Node.js came from
# elsewhere has npm already, and Debian's npm package would conflict with it).
SYSTEM_PACKAGES := nginx:nginx-light chromium:chromium xmlsec1:xmlsec1 npm:npm

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-dev: $(LOCK) pyproject.toml examples/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e . -e examples
	touch $@

$(VENV)/.installed-test: $(TEST_LOCK) pyproject.toml examples/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(TEST_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e . -e examples
	touch $@ $(VENV)/.installed-dev

# xmlsec1 checks SAML signatures (pysaml2 runs it): Blocks itself needs it for SAML sign-in.
dev: $(VENV)/.installed-dev
	@command -v xmlsec1 >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xmlsec1; } || \
		echo "xmlsec1 is missing (apt-get install xmlsec1): SAML sign-in is refused without it"
	$(BIN)/blocks dev

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

system-packages:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do c=$${pair%%:*}; \
		command -v $$c >/dev/null 2>&1 || [ -x /usr/sbin/$$c ] || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The OpenID Provider the single sign-on tests run (the `oidc-provider` npm package, from its lock).
tests/tools/oidc-provider/node_modules: tests/tools/oidc-provider/package-lock.json
	npm ci --no-audit --no-fund --prefix tests/tools/oidc-provider
	touch $@

tests/tools/axe/node_modules: tests/tools/axe/package-lock.json
	npm ci --no-audit --no-fund --prefix tests/tools/axe
	touch $@

test: lint system-packages
	$(MAKE) tests/tools/oidc-provider/node_modules tests/tools/axe/node_modules
	$(BIN)/pytest -n 2 --dist loadgroup

# Known vulnerabilities of the locked dependencies (the test lock holds every runtime pin too).
# Fails on a vulnerability found; a vulnerability service out of reach is reported, not fatal
# (AUDIT_STRICT=1 makes it fatal).
audit: $(VENV)/.installed-test
	$(BIN)/python tools/audit_locked.py $(TEST_LOCK) $(if $(AUDIT_STRICT),--strict)

# Regenerate the locks from pyproject.toml: the test lock (dependencies and the `test` extra),
# then the runtime lock (dependencies and the `redis` extra, for `make dev` and the image) and
# the bench lock (the test lock plus the `bench` extra, for `make bench`), both held to the test
# lock's versions, so they never disagree.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(UV_COMPILE) --extra test --output-file $(TEST_LOCK)
	$(UV_COMPILE) --extra redis --constraint $(TEST_LOCK) --output-file $(LOCK)
	$(UV_COMPILE) --extra test --extra bench --constraint $(TEST_LOCK) --output-file $(BENCH_LOCK)

$(VENV)/.installed-bench: $(BENCH_LOCK) pyproject.toml examples/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(BENCH_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e . -e examples
	touch $@ $(VENV)/.installed-test $(VENV)/.installed-dev

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
