# kmsweb — everyday commands. `make run` and `make test` need only Python 3.11.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
VAR ?= var
PORT ?= 8000
PYTEST_ARGS ?=

export DJANGO_SECRET_KEY_FILE ?= $(CURDIR)/$(VAR)/django_secret_key
export KMSWEB_ROOT_KEY_FILE ?= $(CURDIR)/$(VAR)/root_key

.PHONY: run test lint venv secrets migrate bench clean

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or set PYTHON=" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

secrets: venv
	$(PY) -m kmsweb.lib.devsecrets $(VAR)

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
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

## bench: see bench/README.md
bench: secrets
	$(PY) bench/run.py --help

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .hypothesis
