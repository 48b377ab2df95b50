# `make run`: set up and run the main job; `make test`: set up and run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
QRESNET := $(VENV)/bin/qresnet

.PHONY: run test
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -c "from qresnet.backends.engine import kernel; from qresnet.qnn import response_kernel; kernel.compile_kernels(); response_kernel.compile_kernels()"  # once, ~20 s
	touch $@

# the tests also start a local Ray cluster: the optional extra [ray]
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test,ray]"
	touch $@

run: $(VENV)/.installed
	$(QRESNET) compare --preset quick --jobs 2

# two workers, a test file each (module fixtures such as the local Ray cluster stay in one process)
test: $(VENV)/.installed-test
	$(PY) -m pytest -n 2 --dist loadfile
