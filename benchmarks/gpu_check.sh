#!/usr/bin/env bash
# The GPU checks (overhead, every knob, the engines), in ONE call on a borrowed H100/H200 (15 minutes of device time in all, start-up and
# any rerun included; this aims at < 6 minutes, so run it with timeout_s 420 and there is room for one rerun).
#
# Steps, most important first, each under its own time limit and all under BUDGET seconds (default 340); a failed
# step is reported and the next one still runs, a step that no longer fits the budget is skipped and listed:
#   1. nvidia-smi, versions; TRL/datasets (and DeepSpeed, from its sdist) from carried wheels when the image lacks
#      them (it has torch, transformers, accelerate, peft, but no TRL, datasets or deepspeed, and no network)
#   2. a Qwen2-0.5B-shaped model with random weights, built locally (no hub there; random weights time like trained)
#   3. gpu_check.py train: bf16 + SDPA `trainer.train()` of every knob: MMPOTrainer (MMPO, per-pair weights, ODPO
#      offsets, beta-DPO), GammaPOTrainer (DPO, SimPO, SimPO + MMPO), stock KTOTrainer and MMPOKTOTrainer. A new
#      knob is one line in gpu_check.py's TRAIN_CHECKS, or EXTRA_CHECKS="name=MMPOTrainer:field=value"
#   4. the engines of tests/test_engines.py on one GPU, through `accelerate launch --config_file` with the recipes'
#      own configs (recipes/accelerate_configs/): DeepSpeed ZeRO-2 and ZeRO-3 (skipped without deepspeed), FSDP2
#   5. margin_solve.py on CPU and GPU (the gamma-PO margin solve and queue, microseconds per call)
#   6. overhead.py --device cuda --dtype bfloat16: step-time ratios and peak GPU memory per trainer
#   7. the vLLM backend of `trl-margins generate` (tests/pairs/test_generate.py's GPU test, on step 2's model), where
#      the image has vLLM (its wheels are far over what a call carries); reported as not run otherwise
#   8. `trl-margins rounds`, one round of the offline recipe on step 2's model (and a reward model with a random head
#      on it): bf16 picked for the GPU, generate with vLLM where the image has it, annotate, select, MMPO with LoRA,
#      the held-out evaluation; rounds.json goes to the log
#   9. if time is left: step 6's timing at 4x the batch, to see how the fixed per-step margin cost scales
# Results go to $OUT when set (the device tool brings back at most 8 files: this writes at most 8), else
# benchmarks/results/.
#
# Before the call, here (PyPI reachable), fetch what the GPU image lacks into .whl/ (git-ignored):
#     bash benchmarks/gpu_check.sh --fetch-wheels
# then run it there with the wheels carried: device run, command "bash benchmarks/gpu_check.sh", carry [".whl"],
# timeout_s 420. Without wheels only steps 1 and 5 run (margin_solve.py needs torch alone).
# Here, `bash benchmarks/gpu_check.sh --dry-run` checks every knob's config on the CPU without a model or a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=${WHEELS:-.whl}
if [[ "${1:-}" == "--fetch-wheels" ]]; then
    # The versions this repo is tested with (pure-Python wheels, ~15 MB); the GPU image's python is 3.12.
    # fsspec: datasets 5.2 wants <= 2026.9.0; peft: the image's may predate transformers 5.24.
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 \
        transformers==5.24.0 peft==0.21.2 hjson==3.1.0 ninja py-cpuinfo msgpack einops \
        && python3 -m pip download --no-deps --no-binary=:all: -d "$WHEELS" deepspeed==0.19.8  # an sdist only
fi
if [[ "${1:-}" == "--dry-run" ]]; then
    exec "${PYTHON:-python3}" benchmarks/gpu_check.py train --model none --trainers "$(
        "${PYTHON:-python3}" -c 'import sys; sys.path.insert(0, "benchmarks"); import gpu_check as g
print(",".join(g.TRAIN_CHECKS))')" ${EXTRA_CHECKS:+--check "$EXTRA_CHECKS"} --dry-run
fi

RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-340}
KNOBS=mmpo,mmpo_weights,odpo,beta_dpo,gamma_dpo,gamma_simpo,gamma_mmpo_simpo,kto,mmpo_kto
ENGINE_KNOBS=${ENGINE_KNOBS:-gamma_dpo,mmpo_weights,odpo,beta_dpo,mmpo_kto}
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
    if ! "$PY" -c "import deepspeed" 2>/dev/null && compgen -G "$WHEELS/deepspeed-*.tar.gz" >/dev/null; then
        # Its dependencies from the carried wheels, except pydantic 2, torch and numpy, which the image has
        echo "building deepspeed from its sdist (no ops compiled now; DeepSpeed JIT-builds them when used)"
        run deepspeed_install 120 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
            --target /tmp/site "$WHEELS"/deepspeed-*.tar.gz \
            $(ls "$WHEELS"/{hjson,ninja,py_cpuinfo,msgpack,einops}-*.whl)
        [[ ":$PYTHONPATH:" == *":/tmp/site:"* ]] || export PYTHONPATH="/tmp/site:$PYTHONPATH"
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

    if ((HAVE_TRL)); then
        step "2. Qwen2-0.5B-shaped model with random weights -> $MODEL_DIR"
        if [[ -f "$MODEL_DIR/config.json" ]]; then echo "reusing $MODEL_DIR"; else
            run build_model 120 "$PY" benchmarks/gpu_check.py build-model "$MODEL_DIR" --preset qwen2-0.5b
        fi

        step "3. bf16 + SDPA training of every knob: $KNOBS${EXTRA_CHECKS:+ + $EXTRA_CHECKS}"
        run train_bf16 150 "$PY" benchmarks/gpu_check.py train --model "$MODEL_DIR" --device cuda --dtype bfloat16 \
            --trainers "$KNOBS" ${EXTRA_CHECKS:+--check "$EXTRA_CHECKS"} --steps 3 --output "$RESULTS/gpu_train.json"

        step "4. engines on one GPU, the recipes' accelerate configs: $ENGINE_KNOBS"
        local engine config
        for engine in zero2 zero3 fsdp2; do
            config=recipes/accelerate_configs/$([[ $engine == fsdp2 ]] && echo fsdp || echo "$engine").yaml
            if [[ $engine == zero* ]] && ! "$PY" -c "import deepspeed" 2>/dev/null; then
                echo "deepspeed is not installed: $engine skipped"; FAILED+=("$engine(no deepspeed)"); continue
            fi
            run "$engine" 100 "$PY" -m accelerate.commands.launch --config_file "$config" --num_processes 1 \
                benchmarks/gpu_check.py train --model "$MODEL_DIR" --device cuda --dtype bfloat16 \
                --trainers "$ENGINE_KNOBS" --steps 2 --output "$RESULTS/gpu_engine_$engine.json"
        done
    fi

    step "5. margin solve and queue, CPU and GPU"
    run margin_solve 60 "$PY" benchmarks/margin_solve.py --output "$RESULTS/overhead_margin_solve_cuda.json"

    if ((HAVE_TRL)); then
        step "6. overhead: step time and peak memory per trainer, bf16, SDPA"
        run overhead 120 "$PY" benchmarks/overhead.py --device cuda --dtype bfloat16 --model "$MODEL_DIR" \
            --batch_size 8 --rounds 16 --warmup 2 --memory_steps 3 \
            --output "$RESULTS/overhead_cuda.json"  # its table goes to the log: 8 files at most come back
    fi

    if ((HAVE_TRL)); then
        step "7. vLLM backend of generate"
        local backend=transformers
        if "$PY" -c "import vllm" 2>/dev/null; then
            backend=vllm
            TRL_MARGINS_VLLM_MODEL=$MODEL_DIR run vllm 150 "$PY" -m pytest -q -p no:cacheprovider \
                tests/pairs/test_generate.py -k vllm_backend
        else
            echo "vllm is not installed on this image: the vLLM backend was not run"; FAILED+=("vllm(not installed)")
        fi

        step "8. trl-margins rounds: one round on the GPU, generate with $backend"
        local rm_dir=/tmp/rm-random rounds_dir=/tmp/gpu-rounds
        run build_rm 60 "$PY" -c "import sys, torch; from transformers import AutoModelForSequenceClassification as A, AutoTokenizer as T
torch.manual_seed(0); m = A.from_pretrained(sys.argv[1], num_labels=1); m.config.pad_token_id = m.config.eos_token_id
m.save_pretrained(sys.argv[2]); T.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])" "$MODEL_DIR" "$rm_dir" \
            && run rounds 150 "$PY" -m trl_margins.cli rounds recipes/smollm2-135m-instruct/rounds-mmpo/config_vader.yaml \
                --output_dir "$rounds_dir" --policy "$MODEL_DIR" --reward_model "$rm_dir" --rounds 1 \
                --prompts_per_round 16 --heldout_max_samples 64 --generate.backend "$backend" \
                --generate.max_new_tokens 24 --train.max_steps 4 \
            && cat "$rounds_dir/rounds.json"

        step "9. overhead at 4x the batch (timing only, if time is left)"
        run overhead_bs32 60 "$PY" benchmarks/overhead.py --device cuda --dtype bfloat16 --model "$MODEL_DIR" \
            --batch_size 32 --rounds 8 --warmup 1 --memory none --output "$RESULTS/overhead_cuda_bs32.json"
    fi

    step "done in ${SECONDS}s"
    if ((${#FAILED[@]})); then echo "FAILED: ${FAILED[*]}"; return 1; fi
    echo "all checks passed"
}

# A pipeline rather than `exec > >(tee ...)`: the script ends only once the log is complete in $RESULTS
main 2>&1 | tee "$RESULTS/overhead_gpu_check.log"
exit "${PIPESTATUS[0]}"
