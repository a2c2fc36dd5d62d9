# Two entry points on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed-stamp

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m ssmcompile.ops.warm  # numba's first compile (~45 s) here, not in a first step
	touch $(STAMP)

.PHONY: install test lint demo
install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q -x -p no:cacheprovider

demo: $(STAMP)
	$(PY) examples/demo.py
