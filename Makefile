# The two set-up commands for a fresh machine (see README): `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

.PHONY: demo test bench
# The device half only (no TensorFlow): classify the shipped sample fields with the shipped model on CPU.
demo: $(PY)
	$(PY) -m pip install --quiet -e '.[litert]'
	$(VENV)/bin/blastscope-edge classify edge/samples/*.jpg

# Everything, converter included, then the whole test suite.
test: $(PY)
	$(PY) -m pip install --quiet -e '.[converter,test,systemd]'
	$(PY) -m pytest

bench: $(PY)
	$(PY) -m pip install --quiet -e '.[litert]'
	$(VENV)/bin/blastscope-edge bench
