PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
DATA_ENV = MININET_DATA=$${MININET_DATA:-$(CURDIR)/../shared/data/mnist}
EMULATED = $(CURDIR)/build/gpu-emulated

.PHONY: install install-test build test test-fast typecheck test-gpu-emulated bench cuda-check sdist-check \
        gpu-check gpu-check-dry-run gpu-carry docs clean

install:            ## install mininet (compiles the Cython kernels)
	$(PIP) install .

install-test:       ## editable install with the test extras (pytest, hypothesis, torch CPU reference, MPI, mkdocs)
	$(PIP) install -e ".[test,torch,mpi,docs]"

build:              ## rebuild the extensions in place after editing .pyx files
	$(PYTHON) setup.py build_ext --inplace

test: install-test typecheck cuda-check sdist-check   ## what CI runs: mypy, the tests, then the GPU tests under the emulator
	$(DATA_ENV) $(PYTHON) -m pytest -q tests
	$(MAKE) --no-print-directory test-gpu-emulated

test-fast:          ## tests only, no install, without the tests marked slow
	$(DATA_ENV) $(PYTHON) -m pytest -q -x -m "not slow" tests

typecheck:          ## mypy on mininet/ ([tool.mypy] in pyproject.toml; the test extra installs it)
	$(PYTHON) -m mypy

test-gpu-emulated:  ## the GPU tests on the CPU under the CUDA emulator (none may skip; every kernel must run)
	rm -rf $(EMULATED) && mkdir -p $(EMULATED)
	$(DATA_ENV) MININET_CUDA=emulate MININET_CUDA_EMU_COVERAGE=$(EMULATED)/coverage.json \
		$(PYTHON) -m pytest -q -m gpu --junitxml=$(EMULATED)/junit.xml tests
	$(PYTHON) .ci/junit_no_skips.py $(EMULATED)/junit.xml "GPU tests under the emulator"
	@echo "kernel coverage of the emulated GPU tests (every extern \"C\" entry point of cuda_src/*.cu must run):"
	@$(PYTHON) -m mininet.backend.emulator $(EMULATED)/coverage.json

cuda-check:         ## compile every cuda_src/*.cu with nvcc for sm_80 and sm_90 (skipped without nvcc)
	$(PYTHON) -m mininet.backend.cuda_build --check

sdist-check:        ## build the sdist, a wheel from it, install that in a fresh venv, run mininet info
	PYTHON=$(PYTHON) .ci/sdist_check.sh

gpu-check:          ## on a lent GPU: install PyCUDA (offline), build, GPU tests, sanitizers, benchmarks; one JSON report
	$(PYTHON) bench/gpu_check.py

gpu-check-dry-run:  ## the same script under the CUDA emulator with tiny sizes (no installs, build or sanitizer)
	MININET_CUDA=emulate $(PYTHON) bench/gpu_check.py --dry-run

gpu-carry:          ## what gpu-check needs from ../shared, copied into .whl/ (ignored) to carry to the GPU machine
	mkdir -p .whl/mnist && cp -f ../shared/wheels/cp312/*.whl .whl/ && cp -f ../shared/data/mnist/*.gz .whl/mnist/

docs:               ## the documentation site (needs the docs extra: pip install -e ".[docs]") into build/site
	$(PYTHON) -m mkdocs build --strict -d build/site

bench:
	$(PYTHON) -m mininet.cli bench matmul

clean:
	rm -rf build *.egg-info mininet_ext/*.c mininet_ext/*.so mininet_ext/_build_info.py \
		mininet_ext/_generic mininet_ext/_avx2 mininet_ext/_avx512
