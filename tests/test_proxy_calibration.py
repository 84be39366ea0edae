"""The proxy-fidelity measurements of `benchmarks/proxy_calibration.py`: the teacher-forced replay, the real reruns'
sequence policy and reproducibility, and the cluster-level history regression (numpy only, no training)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.proxy_calibration import (
    SequencePolicy,
    history_features,
    history_regression,
    reproducibility,
)
from envs.calibration import teacher_forced_drops
from envs.proxy_training import ProxyTraining

pytestmark = pytest.mark.numerics  # float results compared to references


TRUTH = dict(
    sizes=[120, 120, 120],
    initial_loss=[1.0, 2.0, 1.5],
    floor=[0.2, 0.8, 1.5],
    skill_rate=[0.05, 0.01, 0.0],
    drift_level=-0.5,
    forgetting=0.01,
    memorization=0.3,
    noise=0.0,
    heterogeneity=0.0,
    budget=0.5,
    round_size=32,
    max_rounds=30,
    compute_expected=False,
)


def _proxy_run(tmp_path, choice_seed: int) -> tuple[list[dict], np.ndarray, object]:
    env = ProxyTraining(**TRUTH, preset="paper")  # the settings this test was worked out for
    env.reset(seed=0)
    rng = np.random.default_rng(choice_seed)
    done = False
    while not done:
        done = any(env.step(int(rng.choice(np.flatnonzero(env.selector.arm_mask()))))[2:4])
    path = tmp_path / f"run{choice_seed}" / "lead_rounds.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in env.lead_state.rounds))
    return env.lead_state.rounds, env.cluster, path.parent


def test_teacher_forced_drops_reproduce_a_noise_free_proxy_run_exactly(tmp_path):
    # A noise-free, homogeneous proxy run is what the teacher-forced replay models: given the true parameters (fixed as
    # overrides, nothing fitted) it must give back every recorded drop, to rounding
    records, labels, folder = _proxy_run(tmp_path, 0)
    fixed = {name: TRUTH[name] for name in ("initial_loss", "floor", "skill_rate", "drift_level", "forgetting")}
    proxy = ProxyTraining.from_rounds(
        folder, clusters=labels, fit=True, memorization=0.3, heterogeneity=0.0, same_cluster_cosine=1.0, **fixed
    )
    drops = teacher_forced_drops(records, labels, proxy.calibration["fitted"])
    recorded = np.full_like(drops, np.nan)
    for r, record in enumerate(records):
        for key, value in record["correction"].items():
            recorded[r, int(key)] = value["d"]
    assert np.array_equal(np.isfinite(drops), np.isfinite(recorded))
    # LEADState keeps IU/IDU in float32, and the replay runs at a gap of 1 then scales: rounding differs at ~1e-7
    # (largest difference measured 1.3e-7 on drops up to 0.8); a wrong dynamics term moves drops by > 0.05
    np.testing.assert_allclose(drops[np.isfinite(drops)], recorded[np.isfinite(recorded)], rtol=0, atol=1e-5)
    # A wrong learning rate must show (the replay is not just echoing the records)
    wrong = {**proxy.calibration["fitted"], "skill_rate": [0.01, 0.05, 0.0]}
    assert np.nanmax(np.abs(teacher_forced_drops(records, labels, wrong) - recorded)) > 0.05


def test_sequence_policy_replays_and_swaps_masked_clusters():
    policy = SequencePolicy([2, 0, 1])
    policy.reset(3, seed=7)
    chosen = []
    for mask in ([True, True, True], [False, True, True], [True, True, True], [True, True, True]):
        arm = policy.select(np.array(mask))
        policy.update(arm, 0.0)
        chosen.append(arm)
    assert chosen == [2, 1, 1, 1]  # cluster 0 masked: the lowest allowed; past the end: the last one
    assert policy.swapped == 1


def _write(path, rewards, ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"round": r, "cluster": 0, "reward": x, "sample_ids": s} for r, (x, s) in enumerate(zip(rewards, ids))]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_reproducibility_compares_rounds_pairwise(tmp_path):
    ids = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    a = _write(tmp_path / "a.jsonl", [0.1, 0.3, -0.2], ids)
    b = _write(tmp_path / "b.jsonl", [0.2, 0.5, -0.2], [[0, 1, 2, 99], *ids[1:]])
    result = reproducibility(a, b)
    x, y = np.array([0.1, 0.3, -0.2]), np.array([0.2, 0.5, -0.2])
    assert result["rounds"] == 3
    assert result["corr"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert result["mae"] == pytest.approx(0.1)
    assert result["same_samples"] == pytest.approx((3 / 4 + 1 + 1) / 3)
    assert result["corr_ceiling"] == pytest.approx(math.sqrt(result["corr"]))


def test_history_features_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    records = [
        {"cluster": 0, "sample_ids": [0, 1], "reward": 0.5, "selected": 2},
        {"cluster": 1, "sample_ids": [2, 3], "reward": -0.1, "selected": 4},
        {"cluster": 0, "sample_ids": [0, 1], "reward": 0.2, "selected": 4},
    ]
    x = history_features(records, labels, 3)
    k = 3
    one_hot, first, gap, gap_by_cluster = slice(0, k), slice(k, 2 * k), 2 * k, slice(2 * k + 1, 3 * k + 1)
    visits, budget, trained, previous = 3 * k + 1, 3 * k + 2, slice(3 * k + 3, 4 * k + 3), 4 * k + 3
    assert x.shape == (3, 4 * k + 4)
    np.testing.assert_array_equal(x[:, one_hot], np.eye(k)[[0, 1, 0]])
    np.testing.assert_array_equal(x[:, first], [[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    assert x[2, gap] == pytest.approx(math.log1p(2)) and x[0, gap] == 0.0
    np.testing.assert_allclose(x[2, gap_by_cluster], [math.log1p(2), 0, 0])
    np.testing.assert_allclose(x[:, visits], [0.0, 0.0, 0.1])
    np.testing.assert_allclose(x[:, budget] * 500, [0, 2, 4])  # budget used before the round
    np.testing.assert_allclose(x[2, trained] * 100, [0, 2, 0])  # since cluster 0's previous visit: round 1's two
    np.testing.assert_allclose(x[1, trained] * 100, [2, 0, 0])  # cluster 1 never visited: since the start
    assert x[2, previous] == 0.5 and x[1, previous] == 0.0


def test_history_regression_predicts_a_reward_that_its_features_determine():
    # Rewards made a known linear function of the features: the regression, fitted on two runs, must predict a third
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 50)
    runs = []
    for _ in range(3):
        records = []
        for r, c in enumerate(rng.integers(0, 3, 40).tolist()):
            records.append({"cluster": c, "sample_ids": rng.choice(np.flatnonzero(labels == c), 8).tolist()})
            records[-1].update(selected=8 * r, reward=0.0)
        features = history_features(records, labels, 3)
        rewards = 0.3 * features[:, 6] - 0.2 * features[:, 1]  # rounds since the previous visit; cluster 1
        for record, value in zip(records, rewards):
            record["reward"] = float(value)
        runs.append(records)
    predict = history_regression(runs[:2], labels, 3)
    truth = np.array([r["reward"] for r in runs[2]])
    assert np.corrcoef(predict(runs[2]), truth)[0, 1] > 0.95
