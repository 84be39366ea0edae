"""A process killed at any moment of a checkpoint save with `save_total_limit=1` leaves a checkpoint that resumes
exactly (transformers deletes the old checkpoint: the LEAD state must reach the new one first)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_resume import SETTINGS, losses_after, rounds_log, run

from trl_lead.trainer import POLICY_FILE, STATE_FILE

SCRIPT = Path(__file__).parent / "scripts" / "kill_during_save.py"
KILLED_STEP = 6  # the second save: checkpoint-3 exists and save_total_limit=1 makes transformers delete it
KILL_SETTINGS = {**SETTINGS, "save_steps": 3, "save_total_limit": 1}  # checkpoint-3 falls in the middle of round 2
# Kill point -> the newest checkpoint that must survive complete. Killed before the rotation the old one is kept;
# after it only the new one is left, so by then it must already hold the LEAD state (the bug: it held a `.tmp`).
SURVIVOR = {"saving-model": 3, "writing-lead-state": 3, "after-rotation": KILLED_STEP}


def model_builder(tokenizer):
    from trl_lead.embedded import build_tiny_model

    return lambda: build_tiny_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=0)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, pool, tokenizer):
    folder = tmp_path_factory.mktemp("uninterrupted")
    return folder, run(folder, "full", pool, tokenizer, model_builder(tokenizer), **KILL_SETTINGS)


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints holding transformers' last file and both LEAD files, oldest first."""
    needed = ("trainer_state.json", STATE_FILE, POLICY_FILE)
    done = [p for p in run_dir.glob("checkpoint-*") if all((p / name).is_file() for name in needed)]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", list(SURVIVOR))
def test_killed_save_with_save_total_limit_leaves_a_checkpoint_that_resumes_exactly(
    tmp_path, pool, tokenizer, uninterrupted, kill_at
):
    env = {**os.environ, "LEAD_TEST_KILL_AT": kill_at, "LEAD_TEST_KILL_STEP": str(KILLED_STEP)}
    command = [sys.executable, str(SCRIPT), str(tmp_path / "killed"), json.dumps(KILL_SETTINGS)]
    result = subprocess.run(command, capture_output=True, timeout=300, env=env)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-3000:]
    assert (tmp_path / "killed" / f"checkpoint-{KILLED_STEP}").is_dir()  # it died while saving that one

    if SURVIVOR[kill_at] != KILLED_STEP:  # the unfinished checkpoint is refused, not resumed from a mixed state
        killed = tmp_path / "killed" / f"checkpoint-{KILLED_STEP}"
        with pytest.raises(ValueError, match="incomplete or damaged"):
            run(
                tmp_path, "from-killed", pool, tokenizer, model_builder(tokenizer), resume=str(killed), **KILL_SETTINGS
            )
    survivors = complete_checkpoints(tmp_path / "killed")
    assert survivors, f"nothing to resume from: {sorted(os.listdir(tmp_path / 'killed'))}"
    assert survivors[-1].name == f"checkpoint-{SURVIVOR[kill_at]}"
    resumed = run(
        tmp_path, "resumed", pool, tokenizer, model_builder(tokenizer), resume=str(survivors[-1]), **KILL_SETTINGS
    )

    full_dir, full = uninterrupted
    assert rounds_log(tmp_path / "resumed") == rounds_log(full_dir / "full")
    assert len(rounds_log(full_dir / "full")) == 4
    np.testing.assert_array_equal(resumed.lead_state.idu, full.lead_state.idu)
    np.testing.assert_array_equal(resumed.lead_state.use_count, full.lead_state.use_count)
    step = SURVIVOR[kill_at]
    assert losses_after(resumed, step) == losses_after(full, step)
    assert len(losses_after(full, step)) == 8 - step
