# The two commands of README.md: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the test suite starts for real (TESTING.md).
APT_PACKAGES := mosquitto postgresql victoria-metrics chromium fonts-wqy-zenhei
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: demo test sysdeps install clean screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
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

clean:
	rm -rf $(VENV) var .pytest_cache
