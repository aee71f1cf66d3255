# The two commands of README.md: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the test suite starts for real (TESTING.md).
APT_PACKAGES := mosquitto postgresql victoria-metrics chromium fonts-wqy-zenhei
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: demo test sysdeps install clean screenshots audit constraints

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Pinned versions (constraints.txt): every install gets the same, audited set.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[server]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed

## make demo: embedded broker + server on SQLite + 12 virtual nodes; prints the URLs.
demo: $(VENV)/.installed
	$(BIN)/campusfleet demo $(DEMO_ARGS)

## make test: installs what the tests need, then runs the whole suite.
## pytest exits 5 when it collected no tests, which fails this target as it should.
test: $(VENV)/.installed-dev sysdeps
	$(BIN)/pytest $(PYTEST_ARGS)

## make screenshots: the dashboards in zh-CN, by headless Chromium, into docs/screenshots/.
screenshots: $(VENV)/.installed-dev sysdeps
	$(BIN)/python scripts/screenshots.py

sysdeps:
	@sh scripts/sysdeps.sh $(APT_PACKAGES)

## make audit: known vulnerabilities in the pinned set (constraints.txt), by pip-audit in
## a venv of its own (its dependencies stay out of the project's). Exit 2 when the
## vulnerability service cannot be reached; AUDIT_ARGS=--tolerate-offline makes that a warning.
AUDIT_VENV := .venv-audit
AUDIT_ARGS ?=
$(AUDIT_VENV)/bin/pip-audit:
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/pip install -q 'pip-audit==2.10.1'

audit: $(AUDIT_VENV)/bin/pip-audit
	$(PYTHON) scripts/audit.py $(AUDIT_VENV)/bin/pip-audit $(AUDIT_ARGS)

## make constraints: re-pin constraints.txt from the current .venv (after a dependency change).
constraints: $(VENV)/.installed-dev
	@{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v -i '^campusfleet'; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt
	@echo "constraints.txt: $$(grep -c '==' constraints.txt) pins"

clean:
	rm -rf $(VENV) $(AUDIT_VENV) var .pytest_cache
