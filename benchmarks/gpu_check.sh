#!/usr/bin/env bash
# GPU checks of issue 7, in ONE call on a borrowed H100/H200 (the lease is 15 minutes in all; this aims at < 8).
#
# Steps, each under its own time limit and all under BUDGET seconds (default 480); a failed step is reported and the
# next one still runs:
#   1. nvidia-smi, versions; TRL/datasets from carried wheels when the image lacks them (it has torch, transformers,
#      accelerate, peft, but no TRL or datasets, and no network)
#   2. margin_solve.py on CPU and GPU (the gamma-PO margin solve and queue, microseconds per call)
#   3. a Qwen2-0.5B-shaped model with random weights, built locally (no hub there; random weights time like trained)
#   4. overhead.py --device cuda --dtype bfloat16 on it: step-time ratios and peak GPU memory per trainer
#   5. gpu_check.py train: bf16 + SDPA `trainer.train()` of MMPOTrainer and GammaPOTrainer (DPO and SimPO rewards)
#   6. distributed on one GPU: DeepSpeed ZeRO-3 through accelerate if deepspeed is installed (skipped otherwise), and
#      FSDP2 through accelerate (torch only)
#   7. if time is left: step 4's timing at 4x the batch, to see how the fixed per-step margin cost scales
# Results go to $OUT when set (the device tool brings back at most 8 files: this writes at most 8), else
# benchmarks/results/.
#
# Before the call, here (PyPI reachable), fetch the wheels the GPU image lacks into .whl/ (git-ignored):
#     bash benchmarks/gpu_check.sh --fetch-wheels
# then run it there with the wheels carried, e.g. device run: command "bash benchmarks/gpu_check.sh", carry [".whl"],
# timeout_s 600. Without wheels only steps 1-2 run (margin_solve.py needs torch alone).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=${WHEELS:-.whl}
if [[ "${1:-}" == "--fetch-wheels" ]]; then
    # The versions this repo is tested with (pure-Python wheels, ~15 MB); the GPU image's python is 3.12.
    # fsspec: datasets 5.2 wants <= 2026.9.0; peft: the image's may predate transformers 5.24.
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 \
        transformers==5.24.0 peft==0.21.2
fi

RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-480}
MODEL_DIR=${MODEL_DIR:-/tmp/qwen2-0.5b-random}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
FAILED=()

step() { echo; echo "=== [t=${SECONDS}s] $*"; }

# run NAME LIMIT CMD...: at most LIMIT seconds, and never past BUDGET (minus 10 s to write the summary)
run() {
    local name=$1 limit=$2; shift 2
    local left=$((BUDGET - SECONDS - 10))
    if ((left < 20)); then
        echo "!!! $name skipped: ${left}s of the ${BUDGET}s budget left"; FAILED+=("$name(skipped)"); return 1
    fi
    ((limit > left)) && limit=$left
    timeout --kill-after=15 "$limit" "$@"
    local rc=$?
    if ((rc != 0)); then
        echo "!!! $name failed with exit $rc$( ((rc == 124)) && echo " (time limit ${limit}s)")"; FAILED+=("$name")
    fi
    return $rc
}

main() {
    step "1. machine"
    nvidia-smi || echo "!!! nvidia-smi failed"
    uptime
    if ! "$PY" -c "import trl, datasets" 2>/dev/null; then
        if compgen -G "$WHEELS/*.whl" >/dev/null; then
            echo "installing carried wheels: $(ls "$WHEELS")"
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
                "$WHEELS"/*.whl && export PYTHONPATH="/tmp/site:$PYTHONPATH"
        else
            echo "!!! TRL/datasets missing and no wheels in $WHEELS: run 'bash benchmarks/gpu_check.sh --fetch-wheels' here"
        fi
    fi
    "$PY" - <<'EOF'
import importlib, sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.version.cuda,
      "| GPU", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for name in ("transformers", "trl", "datasets", "accelerate", "peft", "deepspeed", "pyarrow", "fsspec", "tokenizers"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except Exception as e:
        print(f"{name}: not importable ({type(e).__name__}: {e})")
EOF
    HAVE_TRL=1
    "$PY" -c "import trl_margins" || { HAVE_TRL=0; echo "!!! trl_margins does not import: only margin_solve runs"; }

    step "2. margin solve and queue, CPU and GPU"
    run margin_solve 90 "$PY" benchmarks/margin_solve.py --output "$RESULTS/overhead_margin_solve_cuda.json"

    if ((HAVE_TRL)); then
        step "3. Qwen2-0.5B-shaped model with random weights -> $MODEL_DIR"
        if [[ -f "$MODEL_DIR/config.json" ]]; then echo "reusing $MODEL_DIR"; else
            run build_model 150 "$PY" benchmarks/gpu_check.py build-model "$MODEL_DIR" --preset qwen2-0.5b
        fi

        step "4. overhead: step time and peak memory per trainer, bf16, SDPA"
        run overhead 240 "$PY" benchmarks/overhead.py --device cuda --dtype bfloat16 --model "$MODEL_DIR" \
            --batch_size 8 --rounds 32 --warmup 3 --memory_steps 4 \
            --output "$RESULTS/overhead_cuda.json" --markdown "$RESULTS/overhead_cuda.md"

        step "5. bf16 + SDPA training: MMPOTrainer, GammaPOTrainer (DPO, SimPO, SimPO + MMPO)"
        run train_bf16 150 "$PY" benchmarks/gpu_check.py train --model "$MODEL_DIR" --device cuda --dtype bfloat16 \
            --steps 4 --output "$RESULTS/overhead_gpu_train.json"

        step "6. distributed on one GPU"
        if "$PY" -c "import deepspeed" 2>/dev/null; then
            run zero3 150 "$PY" -m accelerate.commands.launch --num_processes 1 --use_deepspeed --zero_stage 3 \
                --mixed_precision bf16 benchmarks/gpu_check.py train --model "$MODEL_DIR" --device cuda \
                --dtype bfloat16 --trainers gamma_dpo,gamma_simpo --steps 3 --output "$RESULTS/overhead_gpu_zero3.json"
        else
            echo "deepspeed is not installed: DeepSpeed ZeRO-3 skipped"
        fi
        run fsdp2 150 "$PY" -m accelerate.commands.launch --num_processes 1 --use_fsdp --fsdp_version 2 \
            --mixed_precision bf16 --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP \
            --fsdp_transformer_layer_cls_to_wrap Qwen2DecoderLayer --fsdp_state_dict_type SHARDED_STATE_DICT \
            benchmarks/gpu_check.py train --model "$MODEL_DIR" --device cuda --dtype bfloat16 \
            --trainers gamma_dpo,gamma_simpo --steps 3 --output "$RESULTS/overhead_gpu_fsdp2.json"

        step "7. overhead at 4x the batch (timing only)"
        run overhead_bs32 90 "$PY" benchmarks/overhead.py --device cuda --dtype bfloat16 --model "$MODEL_DIR" \
            --batch_size 32 --rounds 16 --warmup 2 --memory none --output "$RESULTS/overhead_cuda_bs32.json"
    fi

    step "done in ${SECONDS}s"
    if [[ -f "$RESULTS/overhead_cuda.md" ]]; then cat "$RESULTS/overhead_cuda.md"; fi
    if ((${#FAILED[@]})); then echo "FAILED: ${FAILED[*]}"; return 1; fi
    echo "all checks passed"
}

# A pipeline rather than `exec > >(tee ...)`: the script ends only once the log is complete in $RESULTS
main 2>&1 | tee "$RESULTS/overhead_gpu_check.log"
exit "${PIPESTATUS[0]}"
