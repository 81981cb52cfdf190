# Two commands on a fresh machine (Python >= 3.10): `make demo` and `make test`. Each creates .venv and
# installs what it needs on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

.PHONY: demo test install clean screenshots
install: $(BIN)/.installed

demo: $(BIN)/.installed  ## the embedded digits on 5 seeds: mean ± sd of every method (CPU, a few minutes)
	$(BIN)/python -m lt_kit demo

test: $(BIN)/.installed  ## lint, then the whole test suite (CPU; installs Chromium for the browser test if missing)
	$(BIN)/ruff check lt_kit tests bench notebooks scripts
	bash scripts/ensure-chromium.sh
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs

screenshots: $(BIN)/.installed  ## re-take docs/img/*.png: runs the four notebooks in JupyterLab + Chromium
	bash scripts/ensure-chromium.sh
	$(BIN)/python scripts/screenshots.py --out docs/img
