#!/usr/bin/env bash
# GPU check for the local engine: builds instill with `--features cuda` (or takes a prebuilt
# binary), generates with SmolLM2-135M-Instruct (Q4_1 GGUF, and dequantized to bf16) and with a
# ~0.5B model when one is given, trains LoRA for a few steps, and prints tokens/s of each.
#
#   INSTILL_SMOLLM2_GGUF=/path/SmolLM2-135M-Instruct.Q4_1.gguf \
#   [INSTILL_GPU_MODEL=/path/to/Qwen2.5-0.5B-Instruct]   # an HF directory or a .gguf, optional
#   [INSTILL_BIN=/path/to/instill]                       # skip the build, use this binary
#   [DEVICE=cuda]                                        # cpu: a dry run of the same steps
#   [REQUESTS=32] [MAX_TOKENS=256] [STEPS=20]            # the size of each job
#   [SKIP_TRAIN=1]                                       # generation only
#   bash scripts/gpu_bench.sh [OUT_DIR]
#
# Everything it writes goes under OUT_DIR (default: a new temporary directory): the databases,
# the adapters, and `gpu-bench.log`, each command's full output. Nothing is downloaded: the
# models are files you name. The numbers are those instill itself prints: generate's final
# progress line (completion tokens/s over the run, prefill included) and train's last line.
set -euo pipefail
cd "$(dirname "$0")/.."

device=${DEVICE:-cuda}
requests=${REQUESTS:-32}
max_tokens=${MAX_TOKENS:-256}
steps=${STEPS:-20}
out=${1:-$(mktemp -d -t instill-gpu-XXXXXX)}
mkdir -p "$out"
log="$out/gpu-bench.log"
: "${INSTILL_SMOLLM2_GGUF:?set INSTILL_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf (see .ci/run)}"
[ -f "$INSTILL_SMOLLM2_GGUF" ] || { echo "gpu_bench: $INSTILL_SMOLLM2_GGUF does not exist" >&2; exit 2; }

say() { echo "gpu_bench: $*" | tee -a "$log"; }
# Seconds since a `date +%s%N` reading, to a tenth.
since() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }

# --- The machine ----------------------------------------------------------------------------
if [ "$device" != cpu ]; then
    command -v nvidia-smi >/dev/null || { echo "gpu_bench: nvidia-smi not found: no NVIDIA driver here" >&2; exit 2; }
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$log"
fi

# --- The binary -----------------------------------------------------------------------------
if [ -n "${INSTILL_BIN:-}" ]; then
    bin=$INSTILL_BIN
else
    features=()
    if [ "$device" != cpu ]; then
        command -v nvcc >/dev/null || { echo "gpu_bench: nvcc not found: the CUDA toolkit builds candle's kernels" >&2; exit 2; }
        features=(--features cuda)
    fi
    say "building: cargo build --release ${features[*]}"
    started=$(date +%s%N)
    cargo build --release --bin instill "${features[@]}" 2>&1 | tail -n 3 | tee -a "$log"
    say "build took $(since "$started") s"
    bin="${CARGO_TARGET_DIR:-target}/release/instill"
fi
[ -x "$bin" ] || { echo "gpu_bench: no instill binary at $bin" >&2; exit 2; }

# Runs one instill command and appends its output to the log. Leaves the output in $out/step.out and the wall time in $wall; exit 1 (generate stopped at
# --max-requests before its target) counts as done.
run_step() {
    local label=$1 started rc=0
    shift
    started=$(date +%s%N)
    "$bin" "$@" >"$out/step.out" 2>&1 || rc=$?
    wall=$(since "$started")
    { echo "### $label: instill $*"; cat "$out/step.out"; } >>"$log"
    if [ "$rc" -gt 1 ]; then
        say "$label: FAILED (exit $rc after $wall s): $(tail -n 1 "$out/step.out")"
        return 1
    fi
}

# --- Generation -----------------------------------------------------------------------------
# The same job for every model: REQUESTS self-instruct requests from the built-in English
# seeds, MAX_TOKENS new tokens at most each, sampling at 0.7, 8 sequences decoded together (and 1).
generate() {
    local label=$1 model=$2 batch=$3
    shift 3
    local db="$out/gen-$label-b$batch.db"
    rm -f "$db" "$db-wal" "$db-shm"
    "$bin" --db "$db" seeds import --builtin en >>"$log" 2>&1 || { say "seeds import failed: see $log"; exit 1; }
    run_step "generate $label, batch $batch" --db "$db" generate --backend candle \
        --device "$device" --model "$model" --batch-size "$batch" --target 100000 \
        --max-requests "$requests" --max-tokens "$max_tokens" --temperature 0.7 --seed 1 "$@" \
        || return 0
    # generate's summary: "tokens: N in, M out"; the wall time includes loading the model.
    local tokens
    tokens=$(grep -a -oE 'tokens: [0-9]+ in, [0-9]+ out' "$out/step.out" | tail -n 1)
    local out_tokens=${tokens##*, }
    out_tokens=${out_tokens% out}
    say "generate $label, batch $batch: $tokens in $wall s: $(awk -v n="$out_tokens" -v s="$wall" 'BEGIN { printf "%.1f", n / s }') completion tokens/s"
}
for batch in 1 8; do
    generate smollm2-q4_1 "$INSTILL_SMOLLM2_GGUF" "$batch"
done
if [ "$device" = cpu ]; then dense=f32; else dense=bf16; fi
generate "smollm2-$dense" "$INSTILL_SMOLLM2_GGUF" 8 --dequantize --dtype "$dense"
if [ -n "${INSTILL_GPU_MODEL:-}" ]; then
    for batch in 1 8; do
        generate "$(basename "$INSTILL_GPU_MODEL")" "$INSTILL_GPU_MODEL" "$batch" --dtype "$dense"
    done
fi

[ "${SKIP_TRAIN:-}" = 1 ] && { say "done (training skipped); full output in $log"; exit 0; }

# --- Training -------------------------------------------------------------------------------
# LoRA r 8 on every projection, STEPS steps of batch 8 over the project's own seed tasks (en and
# zh, instruction and first instance's answer), chat template, f32 and bf16.
train_db="$out/train.db"
rm -f "$train_db" "$train_db-wal" "$train_db-shm"
"$bin" --db "$train_db" import prompts/seeds/en.jsonl prompts/seeds/zh.jsonl >>"$log" 2>&1 || { say "import failed: see $log"; exit 1; }
for dtype in $(printf '%s\n' f32 "$dense" | sort -u); do
    run_step "train --lora smollm2 $dtype" --db "$train_db" train --model "$INSTILL_SMOLLM2_GGUF" \
        --lora --status all --device "$device" --dtype "$dtype" --batch-size 8 --grad-accum 1 \
        --max-steps "$steps" --epochs 100 --max-len 512 --val-fraction 0 --checkpoint-every 1000 \
        --out "$out/lora-$dtype" --overwrite || continue
    # train's last line: "trained N steps on … loss A → B, R tokens/s; wrote DIR".
    say "train --lora smollm2 $dtype: $(grep -a -oE 'trained [0-9]+ steps|loss [0-9.]+ → [0-9.]+|[0-9]+ tokens/s' "$out/step.out" | tail -n 3 | paste -sd ' ') (wall $wall s)"
done
say "done; full output in $log"
