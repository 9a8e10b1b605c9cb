# The two set-up commands for a fresh machine (see README): `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

.PHONY: demo test bench lint
# The daemon on its embedded default (no TensorFlow): replayed sample fields, shipped model, CPU.
demo: $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[litert]'
	$(VENV)/bin/blastscope-edge serve --demo

# Everything, converter included, then the whole test suite.
test: $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[converter,test,systemd]'
	$(PY) -m pytest

bench: $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[litert]'
	$(VENV)/bin/blastscope-edge bench

# The architecture contract (pyproject.toml, [tool.importlinter]): layers, no cycle; ruff for
# errors; mypy (pyproject.toml, [tool.mypy]): the device package clean, analysis and model strict.
lint: $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[converter,test,systemd]'
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check edge converter tools tests
	$(VENV)/bin/mypy
