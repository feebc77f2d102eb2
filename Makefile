# The whole set-up on a fresh machine: `make demo` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: pip takes these two from the machine's local wheels (see DEVELOPERS.md)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/adformer demo --out demo_out

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	# one worker per core (one torch thread each): 363 s instead of 572 s on 2 cores
	$(VENV)/bin/pytest -n auto

bench: $(STAMP)
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
