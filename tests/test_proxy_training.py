"""trl_lead/ProxyTraining-v0 and trl_lead/LiveTraining-v0: Gymnasium contract, the surrogate's properties, the
round logic seen through the env (budget, masks), calibration from round records, and one real live episode."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the environments it knows)
from envs.policies import make_policy
from envs.proxy_training import DEFAULT_CLUSTERS, ProxyTraining

# Asserts on trained models, statistics over seeds or float results: also run under the second kernels (README "Tests")
pytestmark = pytest.mark.numerics

PROXY = "trl_lead/ProxyTraining-v0"
PAPER = {"preset": "paper"}  # the settings these tests were worked out for (the default preset differs)
LIVE = "trl_lead/LiveTraining-v0"
if PROXY not in gymnasium.registry:
    gymnasium.register(id=PROXY, entry_point="envs.proxy_training:ProxyTraining")
if LIVE not in gymnasium.registry:
    gymnasium.register(id=LIVE, entry_point="envs.live_training:LiveTraining", nondeterministic=True)

NOISE = list(DEFAULT_CLUSTERS).index("noise")
LEARNABLE = [k for k, row in enumerate(DEFAULT_CLUSTERS.values()) if row["floor"] < row["initial_loss"]]


def _check_env_quietly(env: gymnasium.Env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    messages = [str(w.message) for w in caught if "gradient_checkpointing" not in str(w.message)]
    assert not messages


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"round_mode": "mixture"},
        {"reward": "first_visit", "fine_selection": "sample", "warmup_rounds": 2},
        {"num_clusters": 3, "pool_size": 300, "reward": "loss_drop", "gradient_correction": False},
    ],
)
def test_passes_gymnasium_env_checker(kwargs):
    env = gymnasium.make(PROXY, **PAPER, **kwargs)
    _check_env_quietly(env)
    expected_space = gymnasium.spaces.Box if kwargs.get("round_mode") == "mixture" else gymnasium.spaces.Discrete
    assert isinstance(env.action_space, expected_space)


def _trajectory(env: gymnasium.Env, seed: int, steps: int = 25) -> list:
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(0)  # the actions: the same sequence of choices among the allowed arms
    out = [obs.tolist()]
    for _ in range(steps):
        allowed = np.flatnonzero(info["action_mask"])
        obs, reward, terminated, truncated, info = env.step(int(rng.choice(allowed)))
        out.append((obs.tolist(), reward, terminated, truncated, info["cluster"], info["selected"]))
    out.append([r["sample_ids"] for r in env.unwrapped.lead_state.rounds])
    return out


def test_same_seed_same_trajectory_and_expected_rewards_do_not_disturb_it():
    env = gymnasium.make(PROXY, **PAPER, fine_selection="sample")
    first = _trajectory(env, 3)
    assert _trajectory(env, 3) == first
    assert _trajectory(gymnasium.make(PROXY, **PAPER, fine_selection="sample"), 3) == first
    assert _trajectory(env, 4) != first
    # The expected-reward simulations run on copies: skipping them changes nothing in the trajectory
    assert _trajectory(gymnasium.make(PROXY, **PAPER, fine_selection="sample", compute_expected=False), 3) == first


@pytest.mark.parametrize("mode", ["single", "mixture"])
def test_regret_is_best_expected_minus_chosen(mode):
    """Expected rewards and regret against rounds played here on copies of the environment, through its public
    `step` (noise 0, so a round's reward is its expected reward): each arm alone, and the action itself. Catches
    expected rewards simulated from the wrong state (e.g. after the round), a wrong arm's value, and a mixture regret
    that is not the action's own round."""
    import copy

    env = gymnasium.make(PROXY, **PAPER, round_mode=mode, budget=0.1, max_rounds=40, noise=0.0)
    obs, info = env.reset(seed=0)
    announced = info["expected_rewards"]  # reset's info: those of the first step
    rng = np.random.default_rng(1)
    k = env.unwrapped.num_clusters
    for t in range(12):
        if mode == "single":
            action = int(rng.choice(np.flatnonzero(info["action_mask"])))
        else:
            action = rng.random(k).astype(np.float32)

        def played(a):
            return copy.deepcopy(env.unwrapped).step(a)[1]

        one_hot = [a if mode == "single" else np.eye(k, dtype=np.float32)[a] for a in range(k)]
        by_hand = np.array([played(one_hot[a]) if info["action_mask"][a] else np.nan for a in range(k)])
        chosen = by_hand[action] if mode == "single" else played(action)
        obs, reward, terminated, truncated, info = env.step(action)
        expected = info["expected_rewards"]
        assert expected.shape == (k,) and expected.dtype == np.float64
        np.testing.assert_allclose(expected, by_hand, rtol=0, atol=1e-12)
        if t == 0:
            np.testing.assert_array_equal(expected, announced)
        assert info["regret"] == pytest.approx(np.nanmax(by_hand) - chosen, abs=1e-12)
        assert reward == pytest.approx(chosen, abs=1e-12)
        if mode == "single":
            assert info["regret"] >= 0
        if terminated or truncated:
            break


def test_expected_reward_of_the_chosen_arm_is_the_noise_free_reward():
    env = gymnasium.make(PROXY, **PAPER, noise=0.0)
    obs, info = env.reset(seed=5)
    for action in [0, 3, 3, 7, 1, 0]:
        obs, reward, terminated, truncated, info = env.step(action)
        assert reward == pytest.approx(info["expected_rewards"][action], abs=1e-6)


def test_without_expected_rewards_info_is_nan():
    env = gymnasium.make(PROXY, **PAPER, compute_expected=False)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(0)
    assert np.isnan(info["expected_rewards"]).all() and math.isnan(info["regret"])
    assert math.isfinite(reward)


def test_masked_arms_are_reported_and_refused():
    # 4 clusters of 20, each sample trainable once: a round of 16 on cluster 0, then its last 4 plus 12 filled
    env = gymnasium.make(PROXY, **PAPER, sizes=[20, 20, 20, 20], round_size=16, budget=1.0, max_reuse=1, max_rounds=50)
    obs, info = env.reset(seed=0)
    assert info["action_mask"].all()
    obs, reward, terminated, truncated, info = env.step(0)
    assert info["action_mask"].tolist() == [True, True, True, True]
    assert obs[4] == pytest.approx(4 / 20)  # eligible fraction of cluster 0
    obs, reward, terminated, truncated, info = env.step(0)
    assert info["filled"] == 12
    selector = env.unwrapped.selector
    np.testing.assert_array_equal(info["action_mask"], selector.arm_mask())
    assert not info["action_mask"][0] and obs[4] == 0
    assert np.isnan(env.unwrapped._expected_rewards()[0])  # a masked arm has no expected reward
    with pytest.raises(ValueError, match="no eligible sample"):
        env.step(0)
    steps = 2
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(int(np.flatnonzero(info["action_mask"])[0]))
        steps += 1
    assert steps == 5 and not info["action_mask"].any()  # 80 samples, 16 per round, each once
    with pytest.raises(RuntimeError, match="terminated"):
        env.step(1)


def test_unlearnable_cluster_gives_no_first_visit_reward_while_learnable_clusters_do():
    # "first_visit" compares the mean IU of never-trained samples between two visits of a cluster: a held-out
    # estimate when those samples are comparable, i.e. drawn at random inside the cluster (under "top" the visits
    # take ever lower initial losses, which looks like progress on every cluster, the unlearnable one included)
    settings = dict(reward="first_visit", fine_selection="random")
    # Without noise or per-sample spread: exactly 0 on the unlearnable cluster, positive on every learnable one
    for k in range(len(DEFAULT_CLUSTERS)):
        env = gymnasium.make(PROXY, **PAPER, noise=0.0, heterogeneity=0.0, **settings)
        env.reset(seed=k)
        first, second = env.step(k)[1], env.step(k)[1]
        if k == NOISE:
            assert abs(first) < 1e-5 and abs(second) < 1e-5
        else:
            assert first > 0 and second > 0.02, (k, first, second)
    # With the default noise and spread, over seeds: the unlearnable cluster's mean stays within noise of 0, the
    # learnable clusters' early rewards (2nd and 3rd of three visits in a row) are clearly positive. Every bound is in
    # standard errors of what it measures, so a different machine (SIMD kernels change the proxy's last bits, which
    # acts like a fresh draw) changes the numbers but not the verdict. A single reward of the noise cluster spreads
    # widely (sd ~0.25), so it gets 96 seeds (SE ~0.017); the learnable clusters get 24 (SE ~0.014).
    # Measured (blocks of seeds 0-479 / 0-119, natively and under the second kernels, see README "Tests"): noise
    # |mean| <= 1.04 SE (bound 4), learnable mean >= 20.0 SE (bound 10), learnable - noise >= 12.0 SE (bound 6).
    env = gymnasium.make(PROXY, **PAPER, compute_expected=False, **settings)

    def early_rewards(k: int, seeds: range) -> np.ndarray:
        out = []
        for seed in seeds:
            env.reset(seed=seed)
            out += [env.step(k)[1] for _ in range(3)][1:]
        return np.array(out)

    def standard_error(x: np.ndarray) -> float:
        return float(x.std(ddof=1) / math.sqrt(len(x)))

    noise = early_rewards(NOISE, range(96))
    learnable = np.concatenate([early_rewards(k, range(24)) for k in LEARNABLE])
    assert abs(noise.mean()) < 4 * standard_error(noise), (noise.mean(), standard_error(noise))
    assert learnable.mean() > 10 * standard_error(learnable), (learnable.mean(), standard_error(learnable))
    gap_se = math.hypot(standard_error(noise), standard_error(learnable))
    assert learnable.mean() - noise.mean() > 6 * gap_se, (learnable.mean(), noise.mean(), gap_se)


def test_easy_cluster_saturates_and_quality_rises_with_training():
    env = gymnasium.make(PROXY, **PAPER, noise=0.0, forgetting=0.0, max_rounds=100, budget=1.0)
    obs, info = env.reset(seed=0)
    assert info["quality"] == 0.0
    easy = list(DEFAULT_CLUSTERS).index("easy")
    for _ in range(4):
        obs, reward, terminated, truncated, info = env.step(easy)
    assert env.unwrapped.surrogate.skill[easy] > 0.99  # saturated within a few rounds
    for k in LEARNABLE:
        obs, reward, terminated, truncated, info = env.step(k)
    assert info["quality"] > 0.3
    surrogate = env.unwrapped.surrogate
    noise_ids = np.flatnonzero(env.unwrapped.cluster == NOISE)
    np.testing.assert_allclose(surrogate.loss(noise_ids), surrogate.base[noise_ids])  # floor = initial loss


def test_outside_policy_runs_an_episode():
    env = gymnasium.make(PROXY, **PAPER, budget=0.1, max_rounds=200, compute_expected=False)
    policy = make_policy("ucb1")
    policy.reset(env.action_space.n, seed=0)
    obs, info = env.reset(seed=0)
    steps, done = 0, False
    while not done:
        arm = policy.select(info["action_mask"])
        obs, reward, terminated, truncated, info = env.step(arm)
        assert math.isfinite(reward) and env.observation_space.contains(obs)
        policy.update(arm, reward)
        steps += 1
        done = terminated or truncated
    assert terminated and steps == math.ceil(200 * 4 / 32)  # 200 samples x 4 uses, 32 per round
    # a mixture policy drives the mixture env through its arm probabilities
    env = gymnasium.make(PROXY, **PAPER, round_mode="mixture", max_rounds=10)
    policy = make_policy("exp3s")
    policy.reset(env.unwrapped.num_clusters, seed=0)
    obs, info = env.reset(seed=0)
    for _ in range(10):
        action = policy.probabilities(info["action_mask"]).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        for arm, r in info["cluster_rewards"].items():
            policy.update(int(arm), r)
    assert truncated


@pytest.mark.parametrize("mode", ["single", "mixture"])
def test_budget_is_never_exceeded(mode):
    env = gymnasium.make(
        PROXY, **PAPER, round_mode=mode, budget=0.05, max_reuse=3, max_rounds=500, compute_expected=False
    )
    obs, info = env.reset(seed=2)
    budget = env.unwrapped.settings.budget
    rng = np.random.default_rng(0)
    done = False
    while not done:
        if mode == "single":
            action = int(rng.choice(np.flatnonzero(info["action_mask"])))
        else:
            action = rng.random(env.unwrapped.num_clusters).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        seen = {i for r in env.unwrapped.lead_state.rounds for i in r["sample_ids"]}
        assert len(seen) <= budget and info["selected"] == len(seen)
        done = terminated or truncated
    assert terminated and len(seen) == budget
    assert env.unwrapped.lead_state.use_count.max() <= 3


def test_step_is_fast():
    import time

    env = gymnasium.make(PROXY, **PAPER, compute_expected=False, budget=1.0, max_reuse=50, max_rounds=10**6)
    env.reset(seed=0)
    for k in range(8):
        env.step(k)
    start = time.perf_counter()
    for t in range(200):
        env.step(t % 8)
    per_step = (time.perf_counter() - start) / 200
    assert per_step < 0.010, per_step  # typically ~1.5 ms; generous for a busy CI machine


def test_does_not_import_torch():
    code = "import sys, envs.proxy_training, gymnasium; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_from_rounds_recovers_a_known_surrogate(tmp_path):
    # Records of proxy runs with known parameters; calibrating on them must recover the structure. One run visits each
    # cluster ~12 times, too few to tell a slow learner's floor from its rate (the floor error of cluster 1 ranged
    # 0.0-0.9 over single runs with seeds 0-7); three runs (different random choices), fitted jointly as
    # `from_rounds` allows, pin it down: largest floor error 0.18 / 0.25 / 0.19 / 0.35 for choice seeds 0-2 / 3-5 /
    # 6-8 / 9-11 (bound 0.5), lowest R^2 0.936 / 0.938 / 0.898 / 0.944 (bound 0.8); bitwise the same natively and
    # under the second kernels
    truth = dict(
        sizes=[150, 150, 150, 150],
        initial_loss=[1.0, 2.0, 1.5, 2.5],
        floor=[0.2, 0.8, 0.9, 2.5],
        skill_rate=[0.05, 0.01, 0.003, 0.0],
        drift_level=-0.5,
        forgetting=0.01,
        noise=0.0,
        budget=0.5,
        round_size=32,
        max_rounds=48,
        compute_expected=False,
    )
    runs = []
    for choice_seed in range(3):
        env = ProxyTraining(**PAPER, **truth)
        env.reset(seed=0)
        rng = np.random.default_rng(choice_seed)
        done = False
        while not done:
            done = any(env.step(int(rng.choice(np.flatnonzero(env.selector.arm_mask()))))[2:4])
        path = tmp_path / f"run{choice_seed}" / "lead_rounds.jsonl"
        path.parent.mkdir()
        path.write_text("".join(json.dumps(r) + "\n" for r in env.lead_state.rounds))
        runs.append(path.parent)
    labels = env.cluster
    fitted = ProxyTraining.from_rounds(runs, clusters=labels, heterogeneity=0.3, **PAPER)
    report = fitted.calibration
    assert fitted.num_clusters == 4 and fitted.sizes.tolist() == truth["sizes"]
    assert fitted.settings.round_size == 32 and fitted.settings.budget == 300
    assert report["fitted"]["batch_size"] == 16
    np.testing.assert_allclose(fitted.initial_loss, truth["initial_loss"], rtol=0.1)
    gap = fitted.initial_loss - fitted.floor
    true_gap = np.subtract(truth["initial_loss"], truth["floor"])
    assert gap[3] < 0.15 * gap[:3].min()  # the unlearnable cluster is recognised as (nearly) unlearnable
    assert np.argmax(fitted.skill_rate[:3]) == 0  # the fastest learner is recognised
    assert min(report["r2_of_drops"][:3]) > 0.8, report["r2_of_drops"]
    assert np.abs(gap[:3] - true_gap[:3]).max() < 0.5, gap[:3] - true_gap[:3]
    fitted.reset(seed=0)
    assert math.isfinite(fitted.step(0)[1])
    with pytest.raises(ValueError, match="lack"):
        (tmp_path / "bad.jsonl").write_text(json.dumps({"x": 1}) + "\n")
        ProxyTraining.from_rounds(tmp_path / "bad.jsonl")


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="initial_loss >= floor"):
        ProxyTraining(initial_loss=1.0, floor=2.0)
    with pytest.raises(ValueError, match="Inconsistent"):
        ProxyTraining(sizes=[10, 10], initial_loss=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="round_mode"):
        ProxyTraining(round_mode="both")
    env = ProxyTraining(**PAPER)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not in Discrete"):
        env.step(8)


@pytest.mark.slow
def test_live_training_runs_real_rounds():
    env = gymnasium.make(LIVE, **PAPER, max_rounds=3)
    try:
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs) and info["action_mask"].all()
        actions, rewards = [5, 0, 5], []
        for action in actions:
            obs, reward, terminated, truncated, info = env.step(action)
            rewards.append(reward)
            assert np.isnan(info["expected_rewards"]).all() and math.isnan(info["regret"])
        assert truncated and not terminated
        assert all(math.isfinite(r) for r in rewards)
        rounds = env.unwrapped.trainer.lead_state.rounds
        assert [r["cluster"] for r in rounds] == actions and [r["reward"] for r in rounds] == rewards
        assert env.unwrapped.trainer.state.global_step == 3 * 2  # 16 samples per round, batches of 8
        # Same seed, same CPU: the same real round (compared with NaN-aware equality, unlike check_env)
        again_obs, _ = env.reset(seed=0)
        again = env.step(5)
        first = env.unwrapped.trainer.lead_state.rounds[0]
        assert again[1] == pytest.approx(rewards[0], abs=1e-6) and first["sample_ids"] == rounds[0]["sample_ids"]
        thread = env.unwrapped._thread
    finally:
        env.close()
    assert thread is not None and not thread.is_alive()  # close() stopped the training thread


@pytest.mark.slow
def test_live_training_passes_gymnasium_env_checker():
    # Registered nondeterministic (GPU training is not bitwise reproducible): check_env then skips its one-step
    # determinism check, which compares the NaN expected rewards with == and would fail on them regardless
    env = gymnasium.make(LIVE, **PAPER, max_rounds=3)
    try:
        _check_env_quietly(env)
    finally:
        env.close()
