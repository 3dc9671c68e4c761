# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test lint clean-venv

run: $(INSTALLED)
	$(PY) launch.py recipe=tiny_llama_pretrain

test: $(INSTALLED)
	$(PY) -m pytest $(PYTEST_ARGS)

# Reinstall whenever the pins change; constraints.txt fixes every transitive version.
$(INSTALLED): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e .
	touch $@

clean-venv:
	rm -rf $(VENV)
