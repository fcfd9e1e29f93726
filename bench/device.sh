#!/usr/bin/env bash
# Every GPU check and benchmark of packed training (issue 15) in one go, sized for about 8 minutes on an H200 (each
# step below has its own time limit: 90 + 270 + 120 s); all figures and logs under $OUT (docs/benchmarks.md,
# "Packed training", says what to record from them).
#
#   on the device machine:  bash bench/device.sh
#   here, the script's logic on CPU with tiny models (no GPU: the GPU tests skip):
#                           DRY_RUN=1 OUT=/tmp/device-out PYTHON=.venv/bin/python bash bench/device.sh
#
# The device's own Python (python3) has torch and transformers, not necessarily the versions pinned here. To run with
# ours, put their wheels in .whl/ (ignored by git) and carry it: `echo /.whl/ >> .git/info/exclude;
# python3 -m pip download --no-deps --only-binary=:all: -d .whl transformers==5.23.0`; they are installed first.
#
# Steps (each with its own time limit, so that one that hangs leaves the others their time):
#   1. the environment: GPU, driver, torch, transformers            -> $OUT/env.txt
#   2. the GPU tests: pytest -m gpu tests/test_gpu.py               -> $OUT/tests.txt
#   3. bench.packed --device cuda: 3 models x 6 rows, ~5 s a row    -> $OUT/packed.json, $OUT/packed.txt
#   4. torch.compile rows (T5 1.1 Base, bf16, K = 1 and 16)         -> $OUT/compile.json, $OUT/compile.txt
# Then, back here: python -m bench.packed --record <files_at>/packed.json (the figures into bench/figures.json, for
# make plan ARGS="plan=h200"), and the figures into docs/benchmarks.md.
set -u
: "${OUT:?OUT must name the folder for the results}"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
BENCH=(--device cuda)
COMPILE=(--device cuda --models t5-base --gpu-ks 16)
LIMITS=(90 270 120)
if [ -n "${DRY_RUN:-}" ]; then  # the same runs with tiny stand-ins of the models on CPU
    BENCH=(--dry-run --suite gpu --device cpu)
    COMPILE=(--dry-run --suite gpu --device cpu --models t5-base --gpu-ks 16)
    LIMITS=(120 300 300)
fi

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi

{
    date -u
    nvidia-smi || echo "no nvidia-smi"
    "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available(), 'transformers', transformers.__version__)"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== GPU tests"
timeout "${LIMITS[0]}" "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/tests.txt"

echo "== packed training benchmark"
timeout "${LIMITS[1]}" "$PY" -m bench.packed "${BENCH[@]}" --json "$OUT/packed.json" 2>&1 | tee "$OUT/packed.txt"

echo "== torch.compile"
# With --compile the rows are bf16 only: each K eager, then compiled (its warm-up steps compile), compared.
timeout "${LIMITS[2]}" "$PY" -m bench.packed "${COMPILE[@]}" --compile --json "$OUT/compile.json" 2>&1 \
    | tee "$OUT/compile.txt"
echo "== done: $(ls "$OUT")"
