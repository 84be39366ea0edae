"""Two gloo ranks on CPU (`accelerate launch --multi_gpu --num_processes 2`, `use_cpu=True`) choose the same rounds as
one process with the same global batch (docs/design.md, Distributed training), and split the passes before the first
step between them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Asserts on trained models, statistics over seeds or float results: also run under the second kernels (README "Tests")
pytestmark = pytest.mark.numerics

SCRIPT = Path(__file__).parent / "scripts" / "run_lead.py"


def launch(out: Path, processes: int, batch: int, resume: Path | None = None, ifd: bool = False) -> None:
    accelerate = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--num_processes",
        str(processes),
    ]
    # `--cpu --num_processes 2` silently starts one process; `--multi_gpu` with use_cpu=True gives gloo ranks
    accelerate += ["--multi_gpu"] if processes > 1 else ["--cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    script = [str(SCRIPT), str(out), str(batch), "8", *([str(resume)] if resume else []), *(["--ifd"] if ifd else [])]
    result = subprocess.run([*accelerate, *script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_ranks_choose_the_same_rounds_as_one(tmp_path):
    # IFD clusters: the scoring pass (initial scores, prompt embeddings) and the answer-alone pass both run
    launch(tmp_path / "two", processes=2, batch=4, ifd=True)
    launch(tmp_path / "one", processes=1, batch=8, ifd=True)
    two = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    one = json.loads((tmp_path / "one" / "rank0.json").read_text())
    assert [t["world"] for t in two] == [2, 2] and one["world"] == 1  # really two ranks
    assert len(one["rounds"]) == 4
    assert len(set(one["clusters"])) == 4
    for rank in two:
        assert rank["clusters"] == one["clusters"]
        assert [r["cluster"] for r in rank["rounds"]] == [r["cluster"] for r in one["rounds"]]
        assert [r["sample_ids"] for r in rank["rounds"]] == [r["sample_ids"] for r in one["rounds"]]
        np.testing.assert_allclose(np.array(rank["idu"], float), np.array(one["idu"], float), atol=1e-5)
    # every planned sample's loss reached the state on both ranks (gathered, de-duplicated)
    lines = (tmp_path / "two" / "lead_rounds.jsonl").read_text().splitlines()
    assert len(lines) == 4  # written once, by the main process
    # Two passes over the 160 samples before the first step; one rank alone forwards all of them, each of two ranks
    # half (its share, padded by accelerate to whole batches of 4 on both ranks: at most 3 repeats per pass)
    pool = len(one["idu"])
    assert one["scored"] == 2 * pool
    for rank in two:
        assert pool <= rank["scored"] <= pool + 2 * 3


@pytest.mark.slow
def test_two_ranks_resume_mid_round_exactly(tmp_path):
    launch(tmp_path / "full", processes=2, batch=4)
    launch(tmp_path / "resumed", processes=2, batch=4, resume=tmp_path / "full" / "checkpoint-3")  # mid round 2
    for rank in (0, 1):
        full = json.loads((tmp_path / "full" / f"rank{rank}.json").read_text())
        resumed = json.loads((tmp_path / "resumed" / f"rank{rank}.json").read_text())
        assert resumed["world"] == 2 and resumed["rounds"] == full["rounds"] and len(full["rounds"]) == 4
        np.testing.assert_array_equal(np.array(resumed["idu"], float), np.array(full["idu"], float))
