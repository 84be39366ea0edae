"""The held-out quality that LiveTraining-v0 and ProxyTraining-v0 report under ``info["quality"]``, and the benchmark's
ranking by it.

The live env's numbers are checked against an evaluation written here from scratch (a greedy decoding loop over the
model's logits, and the answer tokens' cross-entropy), on the very model the episode trained.
"""

import math

import gymnasium
import numpy as np
import pytest

import envs  # noqa: F401  (registers the environments)
from envs.benchmark import main as benchmark_main
from envs.benchmark_report import kendall_tau, mean_ci, quality_rows, split_half_taus
from envs.proxy_training import ProxyTraining

LIVE = "trl_lead/LiveTraining-v0"
EVAL_SIZE = 10  # held-out rows per family: 80 rows, some answered right, most wrong
LR = 2e-4  # small enough that the trained model still answers some rows right, large enough to change it


def _independent_evaluation(model, tokenizer, rows) -> tuple[dict, dict]:
    """Per family: exact-match fraction of a plain greedy loop, and the mean cross-entropy of answer + EOS."""
    import torch

    hits, losses = {}, {}
    model.eval()
    with torch.no_grad():
        for row in rows:
            messages = row["messages"]
            prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True)
            prompt = list(prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt)
            reference = messages[-1]["content"].strip()
            ids = list(prompt)
            for _ in range(12):  # greedy, one token at a time, no cache, until EOS or PAD
                token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
                if token in (tokenizer.eos_token_id, tokenizer.pad_token_id):
                    break
                ids.append(token)
            answer = tokenizer.decode(ids[len(prompt) :], skip_special_tokens=False).strip()
            hits.setdefault(row["family"], []).append(answer == reference)
            target = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"] + [
                tokenizer.eos_token_id
            ]
            logits = model(torch.tensor([prompt + target])).logits[0, len(prompt) - 1 : -1]
            loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(target))
            losses.setdefault(row["family"], []).append(float(loss))
    return hits, losses


@pytest.mark.slow
def test_live_quality_equals_an_independent_evaluation_of_the_trained_model():
    env = gymnasium.make(
        LIVE, pool_size=64, max_rounds=3, eval_every=2, eval_size=EVAL_SIZE, learning_rate=LR, round_mode="single"
    )
    try:
        _, info = env.reset(seed=0)
        base_quality, base_detail = info["quality"], info["quality_detail"]
        qualities, rewards = [], []
        for action in [0, 5, 0]:
            _, reward, terminated, truncated, info = env.step(action)
            qualities.append(info["quality"])
            rewards.append(reward)
        assert truncated and not terminated
        # eval_every=2: step 1 is not evaluated, step 2 is, and the last step always is
        assert math.isnan(qualities[0]) and math.isfinite(qualities[1]) and math.isfinite(qualities[2])
        live = env.unwrapped
        detail = info["quality_detail"]
        rows = live._eval_rows()
        hits, losses = _independent_evaluation(live.trainer.model, live._load_base().tokenizer, rows)
    finally:
        env.close()
    families = detail["families"]
    assert len(rows) == EVAL_SIZE * len(families) and sorted(hits) == sorted(families)
    for index, family in enumerate(families):
        assert detail["exact_match"][index] == pytest.approx(np.mean(hits[family]), abs=1e-12), family
        assert detail["loss"][index] == pytest.approx(np.mean(losses[family]), rel=1e-4), family
    learnable = [h for family in families if family != "noise" for h in hits[family]]
    assert info["quality"] == pytest.approx(np.mean(learnable), abs=1e-12)
    assert detail["loss_learnable"] == pytest.approx(
        np.mean([x for family in families if family != "noise" for x in losses[family]]), rel=1e-4
    )
    assert 0.0 <= base_quality <= 1.0
    all_hits = [h for family in families for h in hits[family]]
    assert any(all_hits) and not all(all_hits)  # the comparison of answers is not vacuous
    # it is the trained model that was evaluated: three rounds moved the held-out losses away from the base model's
    assert max(abs(a - b) for a, b in zip(detail["loss"], base_detail["loss"])) > 1e-3
    # Evaluating does not disturb training: the same seed without intermediate evaluations, same rewards
    again = gymnasium.make(
        LIVE, pool_size=64, max_rounds=3, eval_size=EVAL_SIZE, learning_rate=LR, round_mode="single"
    )
    try:
        again.reset(seed=0)
        steps = [again.step(action) for action in [0, 5, 0]]
    finally:
        again.close()
    assert [s[1] for s in steps] == pytest.approx(rewards, abs=1e-6)
    assert math.isnan(steps[1][4]["quality"]) and "quality_detail" not in steps[1][4]
    assert steps[2][4]["quality"] == pytest.approx(info["quality"], abs=1e-12)


def test_live_refuses_bad_evaluation_arguments():
    with pytest.raises(ValueError, match="eval_every"):
        gymnasium.make(LIVE, eval_every=-1)
    with pytest.raises(ValueError, match="eval_size"):
        gymnasium.make(LIVE, eval_size=51)


def test_proxy_quality_keys_are_present_finite_and_consistent():
    env = ProxyTraining(compute_expected=False, round_mode="single")  # one cluster per step: integer actions
    _, info = env.reset(seed=3)
    assert info["quality"] == 0.0  # nothing trained yet: no skill anywhere
    assert info["quality_detail"]["loss"] == pytest.approx(env.initial_loss.tolist())
    for t in range(15):
        _, _, terminated, truncated, info = env.step(t % 3)
        detail = info["quality_detail"]
        assert math.isfinite(info["quality"]) and all(math.isfinite(x) for x in detail["skill"] + detail["loss"])
        learnable = env.initial_loss > env.floor
        assert info["quality"] == pytest.approx(np.mean(np.asarray(detail["skill"])[learnable]))
        # held-out loss of a cluster: its initial loss minus the skill's share of the learnable gap
        expected = env.initial_loss - np.asarray(detail["skill"]) * (env.initial_loss - env.floor)
        assert detail["loss"] == pytest.approx(expected.tolist())
    assert detail["skill"][0] > 0  # cluster 0 was trained, so it gained skill


def test_quality_rows_rank_by_final_quality_with_paired_intervals():
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 1.0, 5)  # shared by every policy on a seed: pairing removes it

    def run(seed: int, final: float) -> dict:
        quality = np.full(4, np.nan)
        quality[0], quality[-1] = 0.1, final
        return {"seed": seed, "quality": quality, "reward": np.zeros(3)}

    by_policy = {
        "uniform": [run(s, seed_effect[s]) for s in range(5)],
        "better": [run(s, seed_effect[s] + 0.5 + 0.01 * s) for s in range(5)],
        "worse": [run(s, seed_effect[s] - 0.2) for s in range(5)],
    }
    rows = quality_rows(by_policy)
    assert [r["policy"] for r in rows] == ["better", "uniform", "worse"]
    mean, half = mean_ci(seed_effect + 0.5 + 0.01 * np.arange(5))
    assert rows[0]["final_quality"] == pytest.approx(mean) and rows[0]["quality_half"] == pytest.approx(half)
    diff_mean, diff_half = mean_ci(0.5 + 0.01 * np.arange(5))
    assert rows[0]["vs_baseline"] == pytest.approx(diff_mean) and rows[0]["vs_baseline_half"] == pytest.approx(
        diff_half
    )
    assert diff_half < 0.05 < half  # paired: the seed effect cancels, the unpaired interval keeps it
    assert rows[2]["vs_baseline"] == pytest.approx(-0.2) and rows[2]["vs_baseline_half"] == pytest.approx(0, abs=1e-12)
    assert math.isnan(rows[1]["vs_baseline"])


def test_split_half_taus_by_hand():
    # Four seeds -> the 6 ways to pick seeds for the first half. Policy a always beats b and c; b beats c on seeds
    # 0 and 1 only, by 1, and loses by 3 on seeds 2 and 3
    finals = {
        "a": {"0": 10.0, "1": 10.0, "2": 10.0, "3": 10.0},
        "b": {"0": 2.0, "1": 2.0, "2": 0.0, "3": 0.0},
        "c": {"0": 1.0, "1": 1.0, "2": 3.0, "3": 3.0, "4": 99.0},  # seed 4 not run by all: ignored
    }
    taus = split_half_taus(finals)
    # splits (first half): {0,1} {2,3}: b 2 vs c 1 / b 0 vs c 3 -> rankings a>b>c and a>c>b: tau 1/3 (twice);
    # {0,2} {0,3} {1,2} {1,3}: b 1 vs c 2 in both halves -> identical rankings: tau 1 (four times)
    assert sorted(taus) == pytest.approx([1 / 3, 1 / 3, 1, 1, 1, 1])
    # A ranking whose seeds all agree reproduces itself exactly
    assert split_half_taus({"a": {"0": 3, "1": 3}, "b": {"0": 1, "1": 2}}) == [1.0, 1.0]  # {0}|{1} and {1}|{0}


def test_split_half_taus_samples_splits_when_there_are_too_many():
    rng = np.random.default_rng(1)
    finals = {p: {str(s): float(rng.normal(i, 1.0)) for s in range(12)} for i, p in enumerate("abcd")}
    every = split_half_taus(finals, max_splits=10_000)  # C(12, 6) = 924 splits: all of them
    sampled = split_half_taus(finals, max_splits=300)
    assert len(every) == 924 and len(sampled) == 300
    # 300 random splits estimate the median over all 924 (tau takes steps of 1/3 with 4 policies)
    assert abs(np.median(sampled) - np.median(every)) <= 1 / 3 + 1e-9


def test_kendall_tau_matches_scipy_with_and_without_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for x, y in [(rng.normal(size=7), rng.normal(size=7)), ([1, 2, 2, 3, 5], [2, 1, 3, 3, 4]), ([1, 2, 3], [3, 2, 1])]:
        assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_benchmark_ranks_proxy_policies_by_quality_and_agrees_with_itself(tmp_path):
    args = ["--env", "trl_lead/ProxyTraining-v0", "--policies", "exp3s,greedy,uniform", "--seeds", "3",
            "--steps", "20", "--env-kwargs", '{"compute_expected": false}', "--workers", "1",
            "--no-progress"]  # fmt: skip
    benchmark_main([*args, "--out", str(tmp_path / "a")])
    header, *lines = (tmp_path / "a.csv").read_text().splitlines()
    assert header.endswith(",quality") and len(lines) == 3 * 3 * 20
    table = (tmp_path / "a.md").read_text()
    assert "## Ranked by final quality" in table and (tmp_path / "a_quality.png").read_bytes()[:4] == b"\x89PNG"
    # The table's mean final quality is the mean over seeds of the CSV's last quality of each run
    finals = {}
    for line in lines:
        policy, seed, step, *_, quality = line.split(",")
        if int(step) == 19:
            finals.setdefault(policy, []).append(float(quality))
    for policy, values in finals.items():
        assert f"| {policy} | {np.mean(values):.4f} |" in table
    # Same seeds, same runs: the ranking agrees with itself (tau = 1)
    benchmark_main([*args, "--out", str(tmp_path / "b"), "--rank-against", str(tmp_path / "a.csv")])
    assert "**1.00**" in (tmp_path / "b.md").read_text()
    with pytest.raises(ValueError, match="no quality column"):
        bandit = ["--env", "trl_lead/ClusterBandit-v0", "--seeds", "1", "--steps", "5", "--no-progress"]
        benchmark_main([*bandit, "--out", str(tmp_path / "c")])
        benchmark_main([*bandit, "--out", str(tmp_path / "d"), "--rank-against", str(tmp_path / "c.csv")])


def test_benchmark_combines_runs_of_two_seed_ranges_into_the_table_of_one_run(tmp_path):
    """Seeds 0-1 and 2-3 run apart (`--first-seed`) and combined (`--combine`) rank the policies exactly as seeds 0-3
    run at once."""
    common = ["--env", "trl_lead/ProxyTraining-v0", "--policies", "exp3s,ucb1,uniform", "--steps", "6",
              "--env-kwargs", '{"compute_expected": false, "max_rounds": 6}', "--no-progress"]  # fmt: skip
    whole = benchmark_main([*common, "--seeds", "4", "--out", str(tmp_path / "whole")])
    benchmark_main([*common, "--seeds", "2", "--out", str(tmp_path / "a")])
    benchmark_main([*common, "--seeds", "2", "--first-seed", "2", "--out", str(tmp_path / "b")])
    combined = benchmark_main([*common, "--combine", f"{tmp_path / 'a.csv'},{tmp_path / 'b.csv'}",
                               "--out", str(tmp_path / "c")])  # fmt: skip
    assert [row["policy"] for row in combined] == [row["policy"] for row in whole]
    # the CSV holds 6 significant digits: the means agree to them
    assert [row["mean_reward"] for row in combined] == pytest.approx([row["mean_reward"] for row in whole], rel=1e-5)
    assert (tmp_path / "c.csv").read_text() == (tmp_path / "whole.csv").read_text()
    ranked = [line for line in (tmp_path / "c.md").read_text().splitlines() if line.startswith("| 1 |")]
    assert ranked == [line for line in (tmp_path / "whole.md").read_text().splitlines() if line.startswith("| 1 |")]
