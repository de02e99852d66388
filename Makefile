# Two commands from a fresh clone: `make demo` and `make test`.
# Both create .venv when missing and install the package into it with the pinned
# versions in requirements/constraints.txt (torch 2.14.1 / torchvision 0.29.1 lie on
# this machine's disk; other versions would download gigabytes).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dirtymnist-installed
DEMO_DIR ?= demo
# e.g. make demo DEMO_ARGS="--pretrained ready" (the package's ready weights)
DEMO_ARGS ?=

.PHONY: demo test lint clean-demo install

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m dirtymnist demo --out $(DEMO_DIR) $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-demo:
	rm -rf $(DEMO_DIR)
