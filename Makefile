# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv and install the project first.
# `make fuzz` runs the property-based tests of tests/reliability/ long: FUZZ_EXAMPLES random examples per test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
FUZZ_EXAMPLES ?= 2000

.PHONY: demo test fuzz lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	WANDB_SILENT=true $(BIN)/zoo fit --config recipes/digits/xnor_resnet18.yaml --publish.enabled true
	@echo "packed checkpoint and model card: hub/xnor_resnet18-digits/"

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=10

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz ZOO_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q --timeout=0 \
		--hypothesis-show-statistics tests/reliability

lint: $(STAMP)
	$(BIN)/ruff check zoo kernels recipes tests
	$(BIN)/clang-format --dry-run --Werror kernels/zoo_kernels/*.cpp kernels/zoo_kernels/*.h

clean:
	rm -rf runs lightning_logs wandb .pytest_cache
