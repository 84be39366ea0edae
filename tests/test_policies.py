"""Properties every bandit policy in ``envs.policies`` must keep (docs/design.md, Policies)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from envs.policies import POLICIES, Policy, make_policy

# Asserts on trained models, statistics over seeds or float results: also run under the second kernels (README "Tests")
pytestmark = pytest.mark.numerics

ALL = sorted(POLICIES)
WITH_PROBABILITIES = ["boltzmann", "epsilon-greedy", "exp3", "exp3s", "uniform"]


def _rewards(arm: int, step: int) -> float:
    """A fixed reward for (arm, step) in [-1, 1], so two policies can be fed identical feedback."""
    return math.sin(1.7 * arm + 0.31 * step) * (0.5 + 0.1 * arm)


def _run(policy: Policy, steps: int, start: int, masks: np.ndarray | None) -> list[int]:
    arms = []
    for t in range(steps):
        arm = policy.select(None if masks is None else masks[t])
        policy.update(arm, _rewards(arm, start + t))
        arms.append(arm)
    return arms


def _random_masks(rng: np.random.Generator, steps: int, k: int) -> np.ndarray:
    masks = rng.random((steps, k)) < 0.6
    masks[np.arange(steps), rng.integers(k, size=steps)] = True  # never all False
    return masks


def test_registry_names_and_protocol():
    assert set(POLICIES) == {
        "exp3", "exp3s", "boltzmann", "ucb1", "sw-ucb", "d-ucb", "thompson", "epsilon-greedy", "greedy", "uniform",
    }  # fmt: skip
    for name in ALL:
        policy = make_policy(name)
        assert isinstance(policy, Policy)
        assert policy.normalizes_rewards is False
        assert hasattr(policy, "probabilities") == (name in WITH_PROBABILITIES), name
    with pytest.raises(ValueError, match="valid names: .*exp3s.*ucb1"):
        make_policy("ucb2")
    with pytest.raises(TypeError):
        make_policy("ucb1", window=3)  # parameters are checked, not swallowed


def test_import_envs_does_not_import_torch():
    code = "import sys, envs, envs.policies, envs.cluster_bandit, envs.benchmark; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", ALL)
def test_use_before_reset_is_a_clear_error(name):
    with pytest.raises(RuntimeError, match="reset"):
        make_policy(name).select()


@pytest.mark.parametrize("name", ALL)
def test_masked_arms_are_never_chosen(name):
    k, steps = 8, 400
    policy = make_policy(name)
    policy.reset(k, seed=3)
    masks = _random_masks(np.random.default_rng(0), steps, k)
    masks[:50, :4] = False  # some arms masked from the very start (never played)
    masks[:50, 7] = True
    arms = _run(policy, steps, 0, masks)
    assert all(masks[t, a] for t, a in enumerate(arms))
    # a single allowed arm is always the one chosen
    for arm in range(k):
        only = np.zeros(k, dtype=bool)
        only[arm] = True
        assert policy.select(only) == arm
        policy.update(arm, 0.5)


@pytest.mark.parametrize("name", ALL)
def test_bad_masks_raise(name):
    policy = make_policy(name)
    policy.reset(4, seed=0)
    with pytest.raises(ValueError, match="all False"):
        policy.select(np.zeros(4, dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        policy.select(np.ones(5, dtype=bool))
    assert 0 <= policy.select([True, False, True, False]) < 4  # plain lists are accepted


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_choices(name):
    runs = []
    for seed in (7, 7, 8):
        policy = make_policy(name)
        policy.reset(6, seed=seed)
        runs.append(_run(policy, 300, 0, None))
    assert runs[0] == runs[1]
    if name not in ("ucb1", "greedy", "d-ucb", "sw-ucb"):  # these only use randomness to break ties
        assert runs[0] != runs[2]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("between_select_and_update", [False, True])
def test_restored_policy_makes_identical_choices(name, between_select_and_update):
    k = 7
    masks = _random_masks(np.random.default_rng(1), 500, k)
    original = make_policy(name)
    original.reset(k, seed=11)
    _run(original, 150, 0, masks)
    pending = original.select(masks[150]) if between_select_and_update else None

    state = json.loads(json.dumps(original.state_dict(), allow_nan=False))  # strict JSON: no NaN/inf
    restored = make_policy(name)
    restored.load_state_dict(state)

    start = 151 if between_select_and_update else 150
    if between_select_and_update:
        for policy in (original, restored):
            policy.update(pending, _rewards(pending, 150))
    assert _run(restored, 200, start, masks[start:]) == _run(original, 200, start, masks[start:])
    assert json.dumps(restored.state_dict()) == json.dumps(original.state_dict())


def test_load_state_dict_checks_the_policy_name():
    ucb = make_policy("ucb1")
    ucb.reset(3, seed=0)
    with pytest.raises(ValueError, match="ucb1"):
        make_policy("exp3").load_state_dict(ucb.state_dict())


@pytest.mark.parametrize("name", WITH_PROBABILITIES)
def test_probabilities_are_the_distribution_select_draws_from(name):
    k = 6
    policy = make_policy(name)
    policy.reset(k, seed=5)
    rng = np.random.default_rng(2)
    for t in range(60):  # enough updates that the distribution is far from uniform
        arm = policy.select()
        policy.update(arm, float(arm == 4) + 0.3 * rng.random() if t % 3 else rng.random())
    for mask in (None, np.array([True, False, True, True, False, True])):
        p = policy.probabilities(mask)
        assert p.shape == (k,)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert (p >= 0).all()
        if mask is not None:
            assert (p[~mask] == 0.0).all()
        # sample from a copy in the same state: select must follow p (chi-square, df <= 5)
        clone = make_policy(name)
        clone.load_state_dict(policy.state_dict())
        n = 20_000
        counts = np.bincount([clone.select(mask) for _ in range(n)], minlength=k)
        support = p > 0
        assert (counts[~support] == 0).all()
        chi2 = float((((counts - n * p) ** 2)[support] / (n * p[support])).sum())
        assert chi2 < 25.0, (name, mask, counts, p)  # P(chi2_5 > 25) ~ 1e-4


def test_exp3s_probabilities_match_the_formula_by_hand():
    """Auer et al. 2002, Fig. 8: three (arm, reward) updates worked out with plain floats."""
    k, gamma, alpha = 3, 0.1, 0.05
    policy = make_policy("exp3s", gamma=gamma, alpha=alpha)
    policy.reset(k, seed=0)

    w = [1.0, 1.0, 1.0]
    for arm, reward in [(0, 1.0), (2, 0.5), (0, -0.25)]:
        total = w[0] + w[1] + w[2]
        p = [(1 - gamma) * wi / total + gamma / k for wi in w]
        xhat = [reward / p[i] if i == arm else 0.0 for i in range(k)]
        w = [w[i] * math.exp(gamma * xhat[i] / k) + math.e * alpha / k * total for i in range(k)]
        policy.update(arm, reward)
    total = w[0] + w[1] + w[2]
    expected = [(1 - gamma) * wi / total + gamma / k for wi in w]

    assert policy.probabilities() == pytest.approx(expected, rel=1e-12)
    # first step, spelled out: w = [e^0.1 + 0.05 e, 1 + 0.05 e, 1 + 0.05 e] after arm 0 paid 1 at p = 1/3
    first = make_policy("exp3s", gamma=gamma, alpha=alpha)
    first.reset(k)
    first.update(0, 1.0)
    w1 = [math.exp(0.1) + 0.05 * math.e, 1 + 0.05 * math.e, 1 + 0.05 * math.e]
    assert first.probabilities() == pytest.approx([0.9 * x / sum(w1) + 0.1 / 3 for x in w1], rel=1e-12)


def test_exp3_matches_the_formula_by_hand():
    """Auer et al. 2002, Fig. 1: w_i <- w_i exp(gamma xhat_i / K), p_i = (1 - gamma) w_i / sum(w) + gamma / K."""
    k, gamma = 3, 0.1
    policy = make_policy("exp3", gamma=gamma)
    policy.reset(k, seed=0)
    w = [1.0, 1.0, 1.0]
    for arm, reward in [(0, 1.0), (2, 0.5), (0, -0.25), (1, 2.0)]:
        p = [(1 - gamma) * wi / sum(w) + gamma / k for wi in w]
        w[arm] *= math.exp(gamma * (reward / p[arm]) / k)
        policy.update(arm, reward)
    assert policy.probabilities() == pytest.approx([(1 - gamma) * wi / sum(w) + gamma / k for wi in w], rel=1e-12)


def test_exp3s_without_sharing_is_exp3_and_sharing_keeps_every_arm_alive():
    """EXP3-S tends to EXP3 as alpha -> 0. Checked on EXP3-S's own sharing update with alpha = 1e-9 (alpha == 0 takes
    EXP3's update by construction, so it proves nothing): catches a sharing update whose EXP3 part is wrong."""
    a, b, c = make_policy("exp3s", alpha=1e-9), make_policy("exp3"), make_policy("exp3s", alpha=0.01)
    for policy in (a, b, c):
        policy.reset(4, seed=0)
        for t in range(2000):
            policy.update(t % 2, 1.0)  # arms 0 and 1 pay, 2 and 3 are never pulled
    # the shared weight alpha e / K sum(w) moves each probability by < 1e-9 here
    assert a.probabilities() == pytest.approx(b.probabilities(), rel=1e-6)
    # without sharing the unpulled arms sink to the gamma/K floor, with sharing they keep real weight
    assert b.probabilities()[2] == pytest.approx(0.1 / 4, rel=1e-6)
    assert c.probabilities()[2] > 0.1 / 4 + 0.01


@pytest.mark.parametrize("name", ALL)
def test_any_real_reward_is_accepted(name):
    """Rewards on any scale (the policies do not normalise): the state stays finite through wild values, and a
    policy that learns still finds the best arm when the arms pay -1, 1, 250, -3000, 0. Catches rewards clipped to
    [0, 1] (250 and 1 then tie) and statistics that overflow. Measured share of the best arm in steps 200-299 over
    seeds 0-4: 1.0 for the index policies, greedy and Thompson, 0.87-0.95 for epsilon-greedy and EXP3/EXP3-S
    (0.92 expected: 10% exploration), 0.12-0.22 for uniform."""
    pays = [-1.0, 1.0, 250.0, -3000.0, 0.0]
    policy = make_policy(name)
    policy.reset(5, seed=0)
    for t in range(300):
        arm = policy.select()
        policy.update(arm, pays[t % 5])  # every arm sees every scale
    assert 0 <= policy.select() < 5
    json.dumps(policy.state_dict(), allow_nan=False)  # no NaN or inf in its statistics
    if hasattr(policy, "probabilities"):
        p = policy.probabilities()
        assert np.isfinite(p).all() and p.sum() == pytest.approx(1.0)
    policy = make_policy(name)
    policy.reset(5, seed=0)
    arms = []
    for _ in range(300):
        arm = policy.select()
        policy.update(arm, pays[arm])
        arms.append(arm)
    share = np.mean(np.array(arms[200:]) == 2)
    if name == "uniform":
        assert share < 0.4, share  # 0.2 expected: the check is not vacuous
    else:
        assert share > 0.75, share


def test_exp3_refuses_to_update_an_arm_it_could_not_have_drawn():
    policy = make_policy("exp3")
    policy.reset(3, seed=0)
    assert policy.select(np.array([True, False, False])) == 0
    with pytest.raises(ValueError, match="probability 0"):
        policy.update(1, 1.0)


def test_learning_policies_find_the_best_arm_and_uniform_does_not():
    means = np.array([0.2, 0.8, 0.5])
    rng = np.random.default_rng(0)
    picks = {}
    for name in ("uniform", "ucb1", "thompson"):
        policy = make_policy(name)
        policy.reset(3, seed=1)
        arms = []
        for _ in range(1000):
            arm = policy.select()
            policy.update(arm, float(rng.random() < means[arm]))
            arms.append(arm)
        picks[name] = np.bincount(arms[500:], minlength=3) / 500
    assert abs(picks["uniform"] - 1 / 3).max() < 0.08
    assert picks["ucb1"][1] > 0.7 and picks["thompson"][1] > 0.7
