#!/usr/bin/env bash
# The package as a user installs it: build the sdist and the wheel, check their metadata (twine), check that the wheel
# holds the package data (the bundled VADER pairs), then install the wheel into a fresh venv outside the checkout
# (torch first, as the README says; the other dependencies from PyPI) and run .ci/wheel_smoke.py there, from a
# directory the checkout's files cannot be imported from.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'start=$SECONDS; rm -rf "$work"; echo "== removed the work folder in $((SECONDS - start)) s"' EXIT
start=$SECONDS
version=$(python -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")

python -m build --sdist --wheel --outdir "$work/dist" . >"$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }
python -m twine check --strict "$work/dist"/*
wheel=$(ls "$work/dist"/trl_margins-"$version"-*.whl)
python - "$wheel" <<'PY'
import subprocess, sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
shipped = subprocess.run(["git", "ls-files", "trl_margins/data/resources"], capture_output=True, text=True,
                         check=True).stdout.split()
missing = [path for path in shipped if path not in names]
assert shipped and not missing, f"the wheel lacks the package data: {missing}"
assert not [n for n in names if n.startswith(("tests/", "docs/", "benchmarks/"))], "the wheel ships more than the package"
print(f"== {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files, the {len(shipped)} package-data files among them")
PY

echo "== sdist and wheel built and checked in $((SECONDS - start)) s"
start=$SECONDS
python -m venv "$work/venv"
"$work/venv/bin/pip" install -q torch==2.13.0
"$work/venv/bin/pip" install -q "$wheel"
echo "== the wheel and its dependencies installed in a fresh venv in $((SECONDS - start)) s"
start=$SECONDS
cp .ci/wheel_smoke.py "$work/"
cp tests/helpers.py "$work/tiny_models.py"
mkdir "$work/run"
cd "$work/run"
env -u PYTHONPATH "$work/venv/bin/python" "$work/wheel_smoke.py" "$version" "$work/run"
cd "$repo"
echo "== the installed wheel's smoke test took $((SECONDS - start)) s"
