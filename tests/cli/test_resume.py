"""Resuming a training command: from the newest checkpoint that its run finished writing."""

from __future__ import annotations

import json
import logging

from trl_margins.cli.train import last_complete_checkpoint


def test_a_checkpoint_cut_short_is_passed_over(tmp_path, caplog):
    assert last_complete_checkpoint(str(tmp_path)) is None
    for step, state in ((1, json.dumps({"global_step": 1})), (2, None), (3, '{"global_st'), (10, None)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")  # the model is saved first, the state last
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-7.tmp").mkdir()  # not a checkpoint name
    with caplog.at_level(logging.WARNING, logger="trl_margins"):
        assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-1")
    assert [r.getMessage().split(" is incomplete")[0] for r in caplog.records] == [
        str(tmp_path / f"checkpoint-{step}") for step in (10, 3, 2)
    ]
