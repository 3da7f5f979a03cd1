"""The installed wheel, outside the checkout (`.ci/wheel_check.sh` runs this with a fresh venv's python, from a
directory that holds no checkout): the console script answers, every public name imports, and `trl-margins mmpo`
trains two steps on the bundled VADER pairs with a tiny Qwen2 (no hub), which proves the package data ships. The tiny
model is the tests' (`tests/helpers.py`, copied next to this script as `tiny_models.py`; it imports no trl_margins).

    python wheel_smoke.py VERSION WORK_DIR
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def main(version: str, work: Path) -> None:
    import trl_margins

    installed = Path(trl_margins.__file__).resolve()
    assert "site-packages" in installed.parts, f"trl_margins imported from {installed}, not from the installed wheel"
    assert trl_margins.__version__ == version, (trl_margins.__version__, version)
    for name in trl_margins.__all__:
        assert getattr(trl_margins, name) is not None, name
    print(
        f"wheel smoke: trl_margins {version} from {installed.parent}; {len(trl_margins.__all__)} public names import"
    )

    script = Path(sys.executable).with_name("trl-margins")
    shown = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("mmpo", "gamma-po", "reward", "kto", "evaluate", "fit-gamma", "generate", "annotate", "select"):
        assert f"  {command} " in shown, (command, shown)
    print("wheel smoke: `trl-margins --help` lists every command")

    from tiny_models import build_tiny_model

    model = build_tiny_model(str(work / "tiny-qwen2"))
    out = work / "mmpo-vader"
    args = [
        str(script), "mmpo", "--model_name_or_path", model, "--dataset_name", "trl_margins:vader",
        "--mmpo_gamma", "1.0", "--max_steps", "2", "--max_train_samples", "16", "--per_device_train_batch_size", "2",
        "--max_length", "64", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
        "--logging_steps", "1", "--disable_tqdm", "true", "--output_dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(args, cwd=work, env=env, check=True)
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert state["global_step"] == 2 and len(losses) == 2, state
    assert (out / "model.safetensors").is_file()
    print(f"wheel smoke: `trl-margins mmpo` trained 2 steps on trl_margins:vader (losses {losses})")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
