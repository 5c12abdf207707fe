# Set-up path: a local virtual environment with the CPU build of torch 2.13.0.
# (The package itself accepts any torch >= 2.4: `pip install -e .` elsewhere.)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test clean

# Train a small DNC on copy, show that it learned (also beyond the training
# lengths, with a larger memory), and draw what its memory did.
RUN ?= runs/copy-quick
demo: $(STAMP)
	$(BIN)/torchdnc train copy --preset quick --out $(RUN) --force
	$(BIN)/torchdnc eval $(RUN)
	$(BIN)/torchdnc plot $(RUN)

test: $(STAMP)
	$(BIN)/python -m pytest

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'  # every extra: train, plot, ann
	touch $(STAMP)

clean:
	rm -rf $(VENV)
