# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
UV_VERSION := 0.13.9
# uv does not read pip's configuration: pass on a local wheel folder it names (e.g. the CPU build of torch).
FIND_LINKS := $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
UV_ARGS := --python $(PY) --compile-bytecode -c constraints.txt $(if $(FIND_LINKS),--find-links $(FIND_LINKS))
TEST_WORKERS ?= 2
PIP_ARGS := --quiet --disable-pip-version-check -c constraints.txt

.PHONY: run test test-fast clean-venv

run: $(INSTALLED)
	$(PY) launch.py recipe=tiny_llama_pretrain

test: $(INSTALLED)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# Everything that starts no training process: the inner loop.
test-fast: $(INSTALLED)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow" $(PYTEST_ARGS)

# Rebuilt from scratch whenever the pins change; constraints.txt fixes every transitive version.
# uv installs in well under a minute; pip (about 6 minutes) only where uv cannot be had.
$(INSTALLED): pyproject.toml constraints.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	if $(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION); then \
		$(VENV)/bin/uv pip install --quiet $(UV_ARGS) -e . ; \
	else \
		echo "uv unavailable: installing with pip (slower)"; \
		$(VENV)/bin/pip install $(PIP_ARGS) -e . ; \
	fi
	touch $@

clean-venv:
	rm -rf $(VENV)
