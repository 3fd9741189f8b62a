#!/usr/bin/env bash
# The GPU checks and benchmarks a session runs on a lent H200, one stage per call, most urgent first.
# Each stage is sized to finish inside a 10-minute command; logs and results go to OUTDIR.
#
#   bash bench/gpu_session.sh STAGE [OUTDIR]      (OUTDIR: $OUT if set, else ./gpu_out)
#
# Stages, in the order to run them (docs/performance.md, "Not measured yet", says why each is pending):
#   tests       every GPU test file (*_cuda.py) and the compile checks; the persistent layer's file last,
#               under its own time limit, so a hang there cannot hide the other results
#   decode      bf16 decode: the persistent layer kernel against five launches per layer (batch 1 and 16),
#               then the prefill's folded query heads against expanded K / V
#   e2e         30 s edit and batch_edit of 16, five launches per layer then the persistent kernel
#   quant       int8 / int4 decode side by side with bf16 (and int4 without tinygemm)
#   kernels     per-role times of every quantized decode kernel at 1 / 8 / 16 rows
#   quant-e2e   int8 / int4 30 s edits, peak VRAM (bf16's is the e2e stage's)
#
# The pack must be importable as comfyui_step_audio_editx: an editable install, or this script links the
# checkout into a temporary folder on PYTHONPATH. Wheels the machine lacks (soundfile and its cffi /
# pycparser) are installed from ./.whl when that folder is there.
set -uo pipefail
stage="${1:?usage: bench/gpu_session.sh tests|decode|e2e|quant|kernels|quant-e2e [OUTDIR]}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${2:-${OUT:-$root/gpu_out}}"
models="${STEP_AUDIO_EDITX_BENCH_MODELS:-/tmp/step_audio_editx_bench_models}"
TEST_LIMIT_S=540          # one pytest run, inside a 10-minute command
PERSISTENT_TEST_LIMIT_S=240  # the persistent layer's GPU tests: a barrier that never opens must not eat the call
mkdir -p "$out"
cd "$root" || exit 1
export PYTHONUNBUFFERED=1

if [ -d .whl ] && ! python3 -c 'import soundfile' 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! python3 -c 'import comfyui_step_audio_editx' 2>/dev/null; then
    link_dir="$(mktemp -d)"
    ln -s "$root" "$link_dir/comfyui_step_audio_editx"
    export PYTHONPATH="$link_dir${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -c 'import torch, triton; gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print("torch", torch.__version__, "triton", triton.__version__, gpu)' | tee "$out/$stage.env.txt"
per_test_limit=()
python3 -c 'import pytest_timeout' 2>/dev/null && per_test_limit=(--timeout 300)

run() {  # run NAME COMMAND...: log to OUTDIR/NAME.log, say how it ended
    local name="$1"; shift
    local started=$SECONDS
    "$@" 2>&1 | tee "$out/$name.log"
    echo "== $name: rc ${PIPESTATUS[0]}, $((SECONDS - started)) s" | tee -a "$out/summary.txt"
}

case "$stage" in
tests)
    mapfile -t cuda_tests < <(ls tests/*_cuda.py | grep -v test_persistent_layer_cuda.py)
    run tests timeout "$TEST_LIMIT_S" python3 -m pytest -q -p no:cacheprovider "${per_test_limit[@]}" \
        "${cuda_tests[@]}" tests/test_triton_compile.py
    run tests-persistent timeout "$PERSISTENT_TEST_LIMIT_S" python3 -m pytest -q -p no:cacheprovider "${per_test_limit[@]}" \
        tests/test_persistent_layer_cuda.py
    ;;
decode)
    run decode-persistent python3 bench/bench_generation.py --compare-persistent --batch-sizes 1,16 \
        --new-tokens 512 --eager-new-tokens 0 --out "$out/persistent.json" --markdown "$out/persistent.md"
    run decode-prefill-gqa python3 bench/bench_generation.py --compare-prefill-gqa --batch-sizes 1,16 \
        --new-tokens 64 --eager-new-tokens 0 --out "$out/prefill.json" --markdown "$out/prefill.md"
    ;;
e2e)
    run e2e python3 bench/bench_e2e.py --compare-persistent --models "$models" \
        --json "$out/e2e.json" --markdown "$out/e2e.md"
    ;;
quant)
    run quant-decode python3 bench/bench_quant.py --parts decode --variants bf16,int8,int4,int4-interleaved \
        --models "$models" --json "$out/quant.json" --markdown "$out/quant.md"
    ;;
kernels)
    run kernels python3 bench/bench_quant_kernels.py --rows 1 8 16 --variants int8 int4 \
        --json "$out/kernels.json" --markdown "$out/kernels.md"
    run kernels-no-tinygemm python3 bench/bench_quant_kernels.py --rows 1 8 16 --variants int4 --no-tinygemm \
        --json "$out/kernels4.json" --markdown "$out/kernels4.md"
    ;;
quant-e2e)
    run quant-e2e python3 bench/bench_quant.py --parts e2e --e2e-cases "int8 on load,int4 on load" --models "$models" \
        --json "$out/quant_e2e.json" --markdown "$out/quant_e2e.md"
    ;;
*)
    echo "unknown stage $stage: tests, decode, e2e, quant, kernels or quant-e2e" >&2
    exit 2
    ;;
esac
