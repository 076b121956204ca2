# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv and install the project first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	WANDB_SILENT=true $(BIN)/zoo fit --config recipes/digits/xnor_resnet18.yaml --publish.enabled true
	@echo "packed checkpoint and model card: hub/xnor_resnet18-digits/"

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=10

lint: $(STAMP)
	$(BIN)/ruff check zoo tests

clean:
	rm -rf runs lightning_logs wandb .pytest_cache
