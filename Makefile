# kmsweb — everyday commands. `make run` and `make test` need only Python 3.11.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
VAR ?= var
PORT ?= 8000
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` (0: none). Each has its own test
# database and Redis database (tests/conftest.py); two fit CI's two cores.
PYTEST_WORKERS ?= 2

# Settings find the secrets and the database under KMSWEB_VAR_DIR (var/ by
# default), so manage.py run by hand beside `make run` needs no exports.
export KMSWEB_VAR_DIR ?= $(abspath $(VAR))

.PHONY: run test lint venv secrets migrate bench clean

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or set PYTHON=" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

secrets: venv
	$(PY) -m kmsweb.devsecrets $(VAR)

migrate: secrets
	$(PY) manage.py migrate --noinput

## run: the whole service on the embedded default (SQLite, filesystem broker)
run: secrets
	PORT=$(PORT) VAR=$(VAR) PY=$(PY) bash bin/run

## test: the whole suite (SQLite by default; CI sets DATABASE_URL and REDIS_URL)
# Live-server threads would otherwise keep PostgreSQL connections open past
# the end of the run, and the test database could not be dropped.
test: export KMSWEB_DB_CONN_MAX_AGE = 0
test: secrets
	$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# mypy's Django plugin loads the settings, which need the secrets.
lint: secrets
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m mypy kmsweb keys policies audit compliance

## bench: see bench/README.md
bench: secrets
	$(PY) bench/run.py --help

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .hypothesis
