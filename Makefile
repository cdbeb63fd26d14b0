PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-test build test test-fast bench cuda-check sdist-check clean

install:            ## install mininet (compiles the Cython kernels)
	$(PIP) install .

install-test:       ## editable install with the test extras (pytest, hypothesis, torch CPU reference, MPI)
	$(PIP) install -e ".[test,torch,mpi]"

build:              ## rebuild the extensions in place after editing .pyx files
	$(PYTHON) setup.py build_ext --inplace

test: install-test cuda-check sdist-check
	MININET_DATA=$${MININET_DATA:-$(CURDIR)/../shared/data/mnist} $(PYTHON) -m pytest -q tests

test-fast:          ## tests only, no install
	MININET_DATA=$${MININET_DATA:-$(CURDIR)/../shared/data/mnist} $(PYTHON) -m pytest -q -x tests

cuda-check:         ## compile every cuda_src/*.cu with nvcc for sm_80 and sm_90 (skipped without nvcc)
	$(PYTHON) -m mininet.backend.cuda_build --check

sdist-check:        ## build the sdist, a wheel from it, install that in a fresh venv, run mininet info
	PYTHON=$(PYTHON) .ci/sdist_check.sh

bench:
	$(PYTHON) -m mininet.cli bench matmul

clean:
	rm -rf build *.egg-info mininet_ext/*.c mininet_ext/*.so mininet_ext/_build_info.py
