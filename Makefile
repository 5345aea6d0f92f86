# Every target sets up .venv itself on a fresh machine (CPU torch 2.13.0 comes from the local wheel pip finds).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-fast bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,gguf]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lowbit demo

# -n 2: the CI machine has 2 cores. Triton kernels run through the interpreter on the CPU.
test: $(STAMP)
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -q -n 2 --durations=15

test-fast: $(STAMP)
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -q -n 2 -m 'not slow and not gpu'

bench: $(STAMP)
	$(BIN)/lowbit bench layers

clean:
	rm -rf $(VENV) .cache
