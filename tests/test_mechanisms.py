"""The selection mechanisms against hand-worked examples: the Boltzmann policy, the `loss_z` and `small_loss`
sample filters (prompt groups, the keep from the budget, the trained-sample rules), the size split, the `blend` reward
and quantile reward scaling; the config checks; and what the default filter keeps on a benchmark mixture."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trl_lead.filters import group_spread, loss_z_excluded, robust_z
from trl_lead.policies import make_policy
from trl_lead.rewards import QuantileNormalizer, RewardNormalizer
from trl_lead.selection import LEADState, RoundSelector
from trl_lead.settings import SelectionSettings

pytestmark = pytest.mark.numerics


class RecordingPolicy:
    """Always the first allowed arm; takes raw rewards (normalizes_rewards) and records them."""

    normalizes_rewards = True

    def __init__(self):
        self.updates = []

    def reset(self, num_arms, seed=None):
        pass

    def select(self, mask=None):
        return 0 if mask is None else int(np.flatnonzero(mask)[0])

    def update(self, arm, reward):
        self.updates.append((arm, reward))


def make_selector(cluster, policy=None, **settings):
    defaults = dict(round_size=2, budget=len(cluster), round_mode="single", fine_selection="random",
                    reward="first_visit", sample_filter="none", split_by_size=False, filter_revisits=True,
                    filter_keep=0.5)  # fmt: skip
    state = LEADState(np.asarray(cluster))
    return RoundSelector(state, policy or RecordingPolicy(), SelectionSettings(**{**defaults, **settings}), seed=0)


# ----------------------------------------------------------------------------------------------- Boltzmann policy
def test_boltzmann_probabilities_and_updates_by_hand():
    tau, step, floor = 0.5, 0.25, 0.2
    policy = make_policy("boltzmann", temperature=tau, step=step, floor=floor)
    policy.reset(3, seed=0)
    assert policy.probabilities() == pytest.approx([1 / 3] * 3, rel=1e-12)
    policy.update(0, 1.0)  # first reward of arm 0 sets its average: Q0 = 1
    policy.update(0, -1.0)  # Q0 = 1 + 0.25 * (-1 - 1) = 0.5
    policy.update(2, 0.2)  # Q2 = 0.2 (first); Q1 never rewarded: 0
    q = [0.5, 0.0, 0.2]
    assert policy.averages == pytest.approx(q, rel=1e-12)
    soft = [math.exp(x / tau) for x in q]
    expected = [(1 - floor) * s / sum(soft) + floor / 3 for s in soft]
    assert policy.probabilities() == pytest.approx(expected, rel=1e-12)
    # Masked: softmax and floor over the allowed arms only, 0 on the masked one
    allowed = [soft[0], soft[2]]
    expected = [
        (1 - floor) * soft[0] / sum(allowed) + floor / 2,
        0.0,
        (1 - floor) * soft[2] / sum(allowed) + floor / 2,
    ]
    assert policy.probabilities(np.array([True, False, True])) == pytest.approx(expected, rel=1e-12)
    # A mixture round updates each arm it trained with its own reward, whatever the probabilities
    policy.update_mixture({1: 0.4, 2: -0.2}, policy.probabilities())
    assert policy.averages == pytest.approx([0.5, 0.4, 0.2 + 0.25 * (-0.2 - 0.2)], rel=1e-12)
    for bad in (dict(temperature=0.0), dict(step=0.0), dict(step=1.5), dict(floor=1.0), dict(floor=-0.1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            make_policy("boltzmann", **bad)


def _mixture_shares(name: str, seed: int, rounds: int = 50, k: int = 8, round_size: int = 64, swap_at=None):
    """Arm 0's probability per mixture round when it always earns 0 and the others a positive reward (as in the
    trainer: rewards rescaled by the running min/max, one `update_mixture` per round). From `swap_at` on, arm 0 earns
    the most."""
    rng = np.random.default_rng(seed)
    policy = make_policy(name)
    policy.reset(k, seed=seed)
    normalizer = RewardNormalizer()
    means = np.r_[0.0, rng.uniform(0.2, 1.0, k - 1)]
    shares = []
    for r in range(rounds):
        if swap_at is not None and r == swap_at:
            means[0] = 1.5
        p = policy.probabilities()
        shares.append(p[0])
        counts = rng.multinomial(round_size, p)
        rewards = {int(a): normalizer(means[a] * rng.uniform(0.5, 1.5)) for a in np.flatnonzero(counts)}
        policy.update_mixture(rewards, p)
    return np.array(shares)


def test_boltzmann_drops_an_unrewarded_arm_below_half_of_uniform_within_a_third_of_the_rounds():
    k, rounds = 8, 50
    shares = np.array([_mixture_shares("boltzmann", seed, rounds, k) for seed in range(10)])
    third = shares[:, rounds // 3]
    # Over 10 seeds: mean + 4 standard deviations still below half of uniform
    assert third.mean() + 4 * third.std() < 0.5 / k, third
    # ...and it moves back: once arm 0 pays the most, within 15 rounds it is drawn more than uniformly
    back = np.array([_mixture_shares("boltzmann", seed, 40, k, swap_at=25)[-1] for seed in range(10)])
    assert back.mean() - 4 * back.std() > 1 / k, back


# ----------------------------------------------------------------------------------------------- robust z / filter
def test_robust_z_by_hand():
    peers = np.array([1.0, 1.1, 0.9, 1.0, 1.2, 0.8, 5.0])
    # median 1.0; absolute deviations 0, .1, .1, 0, .2, .2, 4 -> MAD 0.1; scale 0.14826
    z, center = robust_z(np.array([5.0, 1.2, 1.0]), peers)
    assert center == 1.0
    assert z == pytest.approx([4.0 / 0.14826, 0.2 / 0.14826, 0.0], rel=1e-9)
    assert (robust_z(np.array([9.0]), peers[:4])[0] == 0).all()  # fewer than 5 peers: nothing stands out
    assert (robust_z(np.array([9.0]), np.ones(6))[0] == 0).all()  # MAD 0: nothing stands out


def test_loss_z_filter_excludes_the_high_tail_of_initial_scores():
    # Cluster 0: seven samples, one with a loss far above its peers (z ~ 27); cluster 1: three samples (too few peers)
    cluster = [0] * 7 + [1] * 3
    initial = np.array([1.0, 1.1, 0.9, 1.0, 1.2, 0.8, 5.0, 1.0, 1.0, 9.0])
    state = LEADState(np.asarray(cluster))
    state.set_initial_scores(initial)
    np.testing.assert_array_equal(loss_z_excluded(state, np.arange(7), 2.5), [0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(loss_z_excluded(state, np.arange(7), 30.0), np.zeros(7))  # z 27 < 30
    np.testing.assert_array_equal(loss_z_excluded(state, np.arange(7, 10), 2.5), np.zeros(3))
    # Without initial scores unseen samples are never excluded
    assert not loss_z_excluded(LEADState(np.asarray(cluster)), np.arange(7), 2.5).any()

    def plan(round_size):
        sel = make_selector(cluster, round_size=round_size, sample_filter="loss_z", filter_z=2.5)
        sel.state.set_initial_scores(initial)
        return sel, sel.plan_round()

    sel, planned = plan(6)  # the six kept samples of cluster 0, and the record says one was filtered
    assert sorted(planned.sample_ids) == [0, 1, 2, 3, 4, 5] and planned.filtered == {"0": 1}
    record = sel.finish_round(planned, planned.sample_ids, np.ones(6))
    assert record["filtered"] == 1 and record["filtered_by_cluster"] == {"0": 1}
    _, planned = plan(9)  # shortfall filled from cluster 1 (kept samples) before the filtered one
    assert sorted(planned.sample_ids) == list(range(6)) + [7, 8, 9] and planned.filled.sum() == 3
    _, planned = plan(10)  # then from the filtered ones rather than a short round
    assert sorted(planned.sample_ids) == list(range(10))
    sel = make_selector(cluster, round_size=7)  # filter off: no exclusion
    sel.state.set_initial_scores(initial)
    assert sorted(sel.plan_round().sample_ids) == list(range(7))


def test_small_loss_filter_keeps_the_lowest_initial_scores_of_each_cluster():
    # Cluster 0: ten samples with initial scores 10, 1, 9, 2, 8, 3, NaN, 4, 7, 5 (nine finite); keep 0.5 -> the cut
    # is the 5th lowest of the nine finite (ceil(4.5) = 5): 5; excluded: 10, 9, 8, 7 (the NaN is never excluded)
    # Cluster 1: four samples, keep 0.5 -> the 2nd lowest of 6, 6, 1, 2: 2; excluded: both 6s
    cluster = np.array([0] * 10 + [1] * 4)
    initial = np.array([10, 1, 9, 2, 8, 3, np.nan, 4, 7, 5, 6, 6, 1, 2], dtype=np.float64)
    state = LEADState(cluster)
    state.set_initial_scores(initial)
    np.testing.assert_array_equal(loss_z_excluded(state, np.arange(10), 2.5, keep=0.5), [1, 0, 1, 0, 1, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(loss_z_excluded(state, np.arange(10, 14), 2.5, keep=0.5), [1, 1, 0, 0])
    # keep 1 excludes no unseen sample; without keep it is the robust-z rule (nothing 2.5 sd out here)
    assert not loss_z_excluded(state, np.arange(10), 2.5, keep=1.0).any()
    assert not loss_z_excluded(state, np.arange(10), 2.5).any()
    # The cut is over all members: once the kept ones are trained the others are still excluded
    state.use_count[[1, 3, 5, 7, 9]] = 1
    state.first_iu[[1, 3, 5, 7, 9]] = state.iu[[1, 3, 5, 7, 9]] = [1.0, 1.1, 0.9, 1.0, 1.05]
    np.testing.assert_array_equal(loss_z_excluded(state, np.arange(10), 2.5, keep=0.5), [1, 0, 1, 0, 1, 0, 0, 0, 1, 0])
    # Trained samples follow the loss_z rules: a first-visit IU far above its trained peers' is excluded
    state.first_iu[9] = state.iu[9] = 9.0
    assert loss_z_excluded(state, np.arange(10), 2.5, keep=0.5)[9]
    # ...only with the trained-sample rules (`lead_filter_revisits`); the cut over unseen samples stays
    np.testing.assert_array_equal(loss_z_excluded(state, np.arange(10), 2.5, keep=0.5, trained=False),
                                  [1, 0, 1, 0, 1, 0, 0, 0, 1, 0])  # fmt: skip

    # Through the selector: the first round takes only kept samples, the record counts the excluded eligible ones,
    # and a round larger than the kept set is filled with kept samples of the other cluster first
    sel = make_selector(cluster, round_size=6, sample_filter="small_loss", filter_keep=0.5)  # policy: cluster 0
    sel.state.set_initial_scores(initial)
    planned = sel.plan_round()
    assert sorted(planned.sample_ids) == [1, 3, 5, 6, 7, 9] and planned.filtered == {"0": 4}
    sel.settings.round_size = 8
    planned = sel.plan_round()
    assert sorted(planned.sample_ids) == [1, 3, 5, 6, 7, 9, 12, 13] and planned.filled.sum() == 2


def test_small_loss_filter_compares_within_filter_groups_across_clusters():
    # Two clusters (a task and a "bad source" of its prompts) and three filter groups that cross them:
    #   group 0: samples 0-3 (cluster 0, scores 1, 2, 3, 4) and 8-9 (cluster 1, scores 7, 8): six finite, keep 0.5
    #            -> the 3rd lowest, 3; excluded: 4, 7, 8 (samples 3, 8, 9)
    #   group 1: samples 4-5 (cluster 0, scores 5, NaN) and 10 (cluster 1, score 6): two finite -> the 1st, 5;
    #            excluded: 6 (sample 10); the NaN is never excluded
    #   group 2: samples 6-7 (cluster 0, NaN, NaN): no finite score -> nothing excluded
    # Within clusters instead, cluster 1 (7, 8, 6: the 2nd lowest, 7) would keep samples 8 and 10.
    cluster = np.array([0] * 8 + [1] * 3)
    groups = np.array([0, 0, 0, 0, 1, 1, 2, 2, 0, 0, 1])
    initial = np.array([1, 2, 3, 4, 5, np.nan, np.nan, np.nan, 7, 8, 6], dtype=np.float64)
    state = LEADState(cluster)
    state.set_initial_scores(initial)
    np.testing.assert_array_equal(loss_z_excluded(state, np.arange(8, 11), 2.5, keep=0.5), [0, 1, 0])
    state.set_filter_groups(groups)
    np.testing.assert_array_equal(state.small_loss_cuts(0.5), [3, 3, 3, 3, 5, 5, np.nan, np.nan, 3, 3, 5])
    np.testing.assert_array_equal(loss_z_excluded(state, np.arange(8), 2.5, keep=0.5), [0, 0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(loss_z_excluded(state, np.arange(8, 11), 2.5, keep=0.5), [1, 1, 1])
    # another keep gives other cuts (not the cached ones): keep 1 excludes nothing, keep 0.1 keeps each group's lowest
    assert not loss_z_excluded(state, np.arange(11), 2.5, keep=1.0).any()
    np.testing.assert_array_equal(state.small_loss_cuts(0.1), [1, 1, 1, 1, 5, 5, np.nan, np.nan, 1, 1, 5])
    # Through the selector: a cluster all of whose samples lose to their groups is masked for the policy
    sel = make_selector(cluster, round_size=2, sample_filter="small_loss", filter_keep=0.5)
    sel.state.set_initial_scores(initial)
    sel.state.set_filter_groups(groups)
    np.testing.assert_array_equal(sel.arm_mask(), [True, False])
    # The groups travel with the state (a resumed run filters the same way)
    other = LEADState(cluster)
    other.load_state_dict(state.state_dict())
    np.testing.assert_array_equal(other.filter_group, groups)
    np.testing.assert_array_equal(other.small_loss_cuts(0.5), state.small_loss_cuts(0.5))
    with pytest.raises(ValueError, match="filter groups"):
        state.set_filter_groups(groups[:-1])


def test_group_spread_is_the_median_interquartile_range_of_groups_with_enough_scores():
    # group 0: 0..9 (IQR 6.75 - 2.25 = 4.5); group 1: 0, 0.1, .., 0.5 and a NaN (six finite: IQR 0.375 - 0.125 =
    # 0.25); group 2: 0.2, 0.4, 0.6, 0.8, 1.0 (IQR 0.8 - 0.4 = 0.4); group 3: four scores (too few peers: left out).
    # The median of 4.5, 0.25 and 0.4 is 0.4; independently, numpy's percentiles group by group.
    scores = np.r_[np.arange(10.0), np.arange(6) / 10, np.nan, [0.2, 0.4, 0.6, 0.8, 1.0], [0.0, 50.0, 90.0, 100.0]]
    groups = np.repeat([0, 1, 2, 3], [10, 7, 5, 4])
    assert group_spread(scores, groups) == pytest.approx(0.4)
    by_hand = [np.subtract(*np.nanpercentile(scores[groups == g], [75, 25])) for g in (0, 1, 2)]
    assert by_hand == pytest.approx([4.5, 0.25, 0.4])
    assert math.isnan(group_spread(scores[-4:], groups[-4:]))  # no group large enough
    # labels need not be contiguous or sorted
    shuffled = np.random.default_rng(0).permutation(len(scores))
    assert group_spread(scores[shuffled], groups[shuffled] * 7 + 3) == pytest.approx(0.4)


@pytest.mark.parametrize("spread, gate_open", [(0.3, False), (2.0, True)])
def test_small_loss_filter_cuts_only_where_the_groups_scores_spread(spread, gate_open):
    # One cluster of 20 samples whose initial scores are evenly spaced over `spread` nats: IQR = spread * 9.5 / 19
    # (numpy's linear quantiles at ranks 14.25 and 4.75).
    # Gate 0.5: closed at 0.3 nats (IQR 0.15; the filter excludes nothing), open at 2 nats (IQR 1; keep 0.25
    # takes the 5 lowest, samples 0-4)
    cluster = np.zeros(20, np.int64)
    initial = np.linspace(0.0, spread, 20)
    sel = make_selector(cluster, round_size=10, sample_filter="small_loss", filter_keep=0.25, filter_min_spread=0.5)
    sel.state.set_initial_scores(initial)
    assert sel.state.filter_spread() == pytest.approx(spread / 2, rel=1e-6)
    assert sel.filter_held_back() is not gate_open
    planned = sel.plan_round()
    if gate_open:
        assert planned.filtered == {"0": 15} and sorted(planned.sample_ids[~planned.filled]) == [0, 1, 2, 3, 4]
    else:
        assert planned.filtered == {"0": 0} and not planned.filled.any() and len(planned.sample_ids) == 10
    # a gate of 0 always cuts, and so does a filter whose spread cannot be measured; new scores are measured anew
    sel.settings.filter_min_spread = 0.0
    assert not sel.filter_held_back()
    sel.settings.filter_min_spread = 0.5
    sel.state.set_initial_scores(np.full(20, np.nan))
    assert math.isnan(sel.state.filter_spread()) and not sel.filter_held_back()
    sel.state.set_initial_scores(initial * 10)
    assert not sel.filter_held_back() and sel.state.filter_spread() == pytest.approx(spread * 5, rel=1e-6)
    sel.settings.sample_filter = "loss_z"  # another filter has no gate
    sel.state.set_initial_scores(initial / 100)
    assert not sel.filter_held_back()


@pytest.mark.parametrize(
    "name, allowed, refused",
    [
        ("filter_z", [1e-9, 2.5, 100.0], [0.0, -1.0, math.inf]),
        ("filter_keep", [1e-9, 0.5, 1.0], [0.0, 1.0001, math.nan]),
        ("filter_min_spread", [0.0, 0.6, 50.0], [-1e-9, math.nan, math.inf]),
        ("budget_pace", [0.0, 0.5, 1.0], [-0.1, 1.5, "0.5"]),
    ],
)
def test_numeric_settings_are_checked_against_their_ranges_at_both_entry_points(tmp_path, name, allowed, refused):
    from trl_lead import LEADConfig

    for value in allowed:
        SelectionSettings(round_size=2, budget=4, **{name: value})
        LEADConfig(output_dir=str(tmp_path), use_cpu=True, **{f"lead_{name}": value})
    for value in refused:
        with pytest.raises(ValueError, match=f"`{name}={value!r}` must be a finite number"):
            SelectionSettings(round_size=2, budget=4, **{name: value})
        with pytest.raises(ValueError, match=f"`lead_{name}={value!r}` must be a finite number"):
            LEADConfig(output_dir=str(tmp_path), use_cpu=True, **{f"lead_{name}": value})


def test_filter_min_spread_is_said_to_have_no_effect_without_the_small_loss_filter(tmp_path):
    from trl_lead import LEADConfig

    with pytest.warns(UserWarning, match="lead_filter_min_spread=1.0` has no effect"):
        LEADConfig(output_dir=str(tmp_path), use_cpu=True, lead_sample_filter="none", lead_filter_min_spread=1.0)


def test_split_by_size_weights_each_cluster_by_the_samples_it_can_give():
    # Three clusters of 40, 8 and 24 samples; the small-loss filter (keep 0.5) leaves 20, 4 and 12 candidates, each
    # at least a round of 4, so no share runs short. Uniform policy: a mixture round is split with p = (1/3 each) x
    # (20, 4, 12) / 12 = (5/9, 1/9, 1/3): 2.22, 0.44 and 1.33 of 4 samples on average, against 4/3 each without the
    # option. Planning does not change the state: 2000 draws of the first round (standard error of a mean <= 0.025).
    # Where the filter's gate is closed (scores 100 times closer: a spread of 0.18 under the gate of 0.6) the filter
    # excludes nothing and the split has no verdicts to weigh: the round is split as without the option.
    cluster = np.repeat([0, 1, 2], [40, 8, 24])
    initial = np.random.default_rng(1).permutation(72).astype(float)
    expected = {True: np.array([5, 1, 3]) * 4 / 9, False: np.full(3, 4 / 3), "closed": np.full(3, 4 / 3)}
    for split in (False, True, "closed"):
        policy = make_policy("uniform")
        policy.reset(3, seed=0)
        sel = make_selector(cluster, policy, round_size=4, round_mode="mixture", sample_filter="small_loss",
                            filter_keep=0.5, split_by_size=bool(split), filter_min_spread=0.6)  # fmt: skip
        sel.state.set_initial_scores(initial / 100 if split == "closed" else initial)
        assert sel.filter_held_back() is (split == "closed")
        taken = np.zeros(3)
        for _ in range(2000):
            planned = sel.plan_round()
            assert not planned.filled.any() and planned.probabilities == pytest.approx([1 / 3] * 3)  # the policy's
            taken += np.bincount(cluster[planned.sample_ids], minlength=3)
        np.testing.assert_allclose(taken / 2000, expected[split], atol=0.1)


def test_a_cluster_whose_eligible_samples_the_filter_all_excludes_is_masked():
    # Cluster 0: 4 samples, keep 0.5 -> samples 0, 1 (initial 1, 2) kept, 2, 3 (initial 8, 9) excluded. Once 0 and 1
    # reach the reuse cap, cluster 0 has eligible samples but none the filter lets through: a policy that chose it
    # would train none of its samples (the bug: the round's reward was then NaN). Cluster 1 is unfiltered (its 2
    # samples are within keep: ceil(0.5 * 2) = 1 -> cut 5, both 5).
    cluster = np.array([0, 0, 0, 0, 1, 1])
    sel = make_selector(cluster, round_size=2, budget=6, max_reuse=1, sample_filter="small_loss", filter_keep=0.5)
    sel.state.set_initial_scores(np.array([1.0, 2.0, 8.0, 9.0, 5.0, 5.0]))
    np.testing.assert_array_equal(sel.arm_mask(), [True, True])
    planned = sel.plan_round()  # RecordingPolicy takes the first allowed cluster: 0
    assert sorted(planned.sample_ids) == [0, 1]
    sel.finish_round(planned, planned.sample_ids, np.ones(2))
    np.testing.assert_array_equal(sel.arm_mask(), [False, True])
    planned = sel.plan_round()
    assert planned.arms == [1] and sorted(planned.sample_ids) == [4, 5]
    record = sel.finish_round(planned, planned.sample_ids, np.ones(2))
    assert np.isfinite(record["reward"])
    # Nothing the filter keeps is left anywhere: the mask falls back to eligibility, and rounds to excluded samples
    np.testing.assert_array_equal(sel.arm_mask(), [True, False])
    planned = sel.plan_round()
    assert sorted(planned.sample_ids) == [2, 3]
    assert np.isfinite(sel.finish_round(planned, planned.sample_ids, np.ones(2))["reward"])


def test_loss_z_filter_drops_revisited_samples_whose_loss_did_not_fall_with_their_peers():
    state = LEADState(np.zeros(6, dtype=int))
    state.use_count[:] = 2
    state.first_iu[:] = 2.0  # equal first-visit IUs: MAD 0, nothing stands out there
    state.iu[:] = [1.0, 1.1, 0.9, 1.0, 1.05, 2.0]
    # drops 1, .9, 1.1, 1, .95, 0: median .975, MAD .05 -> z of the last = -.975 / (1.4826 * .05) = -13.2
    drop = state.first_iu - state.iu
    z, center = robust_z(drop, drop)
    assert center == pytest.approx(0.975) and z[5] == pytest.approx(-0.975 / (1.4826 * 0.05))
    np.testing.assert_array_equal(loss_z_excluded(state, np.arange(6), 2.5), [0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(loss_z_excluded(state, np.arange(6), 14.0), np.zeros(6))
    # A sample visited once is not judged by the revisit rule
    state.use_count[5] = 1
    assert not loss_z_excluded(state, np.arange(6), 2.5).any()
    # Peers whose loss did not fall either (median drop <= 0, e.g. an unlearnable cluster): nobody is singled out
    state.use_count[:] = 2
    state.iu[:] = [2.0, 2.1, 1.95, 2.0, 2.05, 3.0]
    assert not loss_z_excluded(state, np.arange(6), 2.5).any()
    # The high tail of first-visit IUs among trained samples is excluded too
    state.first_iu[:] = [2.0, 2.1, 1.9, 2.0, 2.2, 9.0]
    state.iu[:] = state.first_iu
    state.use_count[:] = 1
    np.testing.assert_array_equal(loss_z_excluded(state, np.arange(6), 2.5), [0, 0, 0, 0, 0, 1])
    assert not loss_z_excluded(state, np.arange(6), 2.5, trained=False).any()
    # Through the selector: the outlier is kept out of a round only with `filter_revisits` (LEADConfig's
    # `lead_filter_revisits`, off by default)
    for revisits, filtered in ((True, 1), (False, 0)):
        sel = make_selector(np.zeros(6, int), round_size=5, sample_filter="loss_z", filter_revisits=revisits)
        sel.state.use_count[:], sel.state.first_iu[:], sel.state.iu[:] = 1, state.first_iu, state.iu
        planned = sel.plan_round()
        assert planned.filtered == {"0": filtered} and (5 in planned.sample_ids) <= (not revisits)


# ----------------------------------------------------------------------------------------------- blend reward
def test_blend_reward_is_first_visit_then_the_loss_drop_of_revisits():
    for reward in ("blend", "first_visit"):
        policy = RecordingPolicy()
        sel = make_selector(
            [0] * 4, policy, round_size=2, budget=3, max_reuse=4, reward=reward, gradient_correction=False
        )
        sel.state.set_initial_scores(np.array([3.0, 3.0, 3.0, 3.0]))
        # Round 1, samples 0 and 1 new: initial 3 minus their mean IU now
        planned = sel.plan_round()
        r1 = sel.finish_round(planned, np.array([0, 1]), np.array([2.0, 2.5]))
        assert r1["cluster_rewards"]["0"] == pytest.approx(3.0 - 2.25)
        # Round 2, sample 2 new and sample 0 revisited: the first-visit rule still measures (last 2.25 minus 1.5)
        planned = sel.plan_round()
        r2 = sel.finish_round(planned, np.array([2, 0]), np.array([1.5, 1.0]))
        assert r2["cluster_rewards"]["0"] == pytest.approx(2.25 - 1.5)
        # Round 3, budget spent, only revisits: first_visit has nothing to measure; blend takes their loss drop since
        # their first visits, (2 - 0.5 + 2.5 - 2.5) / 2
        planned = sel.plan_round()
        r3 = sel.finish_round(planned, np.array([0, 1]), np.array([0.5, 2.5]))
        if reward == "blend":
            assert r3["cluster_rewards"]["0"] == pytest.approx(0.75) and r3["rewarded"] == [0]
            assert [r for _, r in policy.updates] == pytest.approx([0.75, 0.75, 0.75])
        else:
            assert r3["rewarded"] == [] and len(policy.updates) == 2


def test_heldout_gain_reward_pairs_each_new_sample_with_its_initial_score():
    policy = RecordingPolicy()
    sel = make_selector([0] * 4, policy, round_size=2, budget=3, max_reuse=4, reward="heldout_gain",
                        gradient_correction=False)  # fmt: skip
    sel.state.set_initial_scores(np.array([3.0, 1.0, 2.0, 5.0]))
    # Round 1, samples 0 and 1 new: mean of (3 - 2, 1 - 1.5) = 0.25 (first_visit would give 2 - 1.75 = 0.25 too:
    # round 2 tells them apart)
    planned = sel.plan_round()
    r1 = sel.finish_round(planned, np.array([0, 1]), np.array([2.0, 1.5]))
    assert r1["cluster_rewards"]["0"] == pytest.approx(0.25)
    # Round 2, sample 2 new (initial 2, now 2.5) and sample 0 revisited: only the new one counts, paired with its own
    # initial score: 2 - 2.5 = -0.5 (first_visit: last mean 1.75 minus 2.5 = -0.75)
    planned = sel.plan_round()
    r2 = sel.finish_round(planned, np.array([2, 0]), np.array([2.5, 0.1]))
    assert r2["cluster_rewards"]["0"] == pytest.approx(-0.5)
    # Round 3, budget spent: nothing new to measure, no reward (the policy is not updated)
    planned = sel.plan_round()
    r3 = sel.finish_round(planned, np.array([0, 1]), np.array([0.5, 0.5]))
    assert r3["rewarded"] == [] and [r for _, r in policy.updates] == pytest.approx([0.25, -0.5])
    # Without initial scores there is nothing to pair with: no reward
    sel = make_selector([0] * 4, RecordingPolicy(), round_size=2, reward="heldout_gain")
    planned = sel.plan_round()
    assert sel.finish_round(planned, planned.sample_ids, np.ones(2))["rewarded"] == []


# ----------------------------------------------------------------------------------------------- quantile scaling
def test_quantile_normalizer_by_hand():
    # numpy's linear quantiles: the q-quantile of n sorted values sits at position q (n - 1)
    normalizer = QuantileNormalizer()
    assert normalizer(0.0) == 0.0  # one reward: no spread
    assert normalizer(1.0) == 1.0  # [0, 1]: percentiles 0.2 and 0.8, 1 lies above
    assert normalizer(0.5) == pytest.approx(0.0)  # [0, .5, 1]: 0.2 and 0.8 -> 2 (0.5 - 0.2) / 0.6 - 1
    assert normalizer(3.0) == 1.0
    assert normalizer(2.0) == pytest.approx(2 * (2.0 - 0.4) / 1.8 - 1)  # [0, .5, 1, 2, 3]: 0.4 and 2.2
    assert normalizer(-5.0) == -1.0  # below the 20th percentile
    normalizer.history = [0.0, 1.0, 0.5, 3.0, 2.0]
    # One outlier does not squash the others: [0, .5, 1, 2, 2, 3, 1000] has percentiles 0.6 and 2.8; under the
    # running min/max 2 would map to 2 * 2 / 1000 - 1 ~ -1
    assert normalizer(1000.0) == 1.0
    assert normalizer(2.0) == pytest.approx(2 * (2.0 - 0.6) / 2.2 - 1)
    small = QuantileNormalizer(window=3)
    for x in (100.0, 0.0, 1.0, 2.0):
        small(x)
    assert small.history == [0.0, 1.0, 2.0]  # the last `window` rewards


@pytest.mark.parametrize("reward, sample_filter", [("mean_idu", "none"), ("heldout_gain", "small_loss")])
def test_selector_state_round_trips_the_quantile_history(reward, sample_filter):
    cluster = np.repeat([0, 1, 2], 10)
    policies = [make_policy("boltzmann") for _ in range(2)]
    selectors = []
    for policy in policies:
        policy.reset(3, seed=0)
        sel = make_selector(cluster, policy, round_size=6, budget=30, round_mode="mixture", reward=reward,
                            reward_scaling="quantile", sample_filter=sample_filter)  # fmt: skip
        sel.state.set_initial_scores(np.linspace(1, 2, 30))
        selectors.append(sel)
    a, b = selectors
    assert isinstance(a.normalizer, QuantileNormalizer)
    rng = np.random.default_rng(0)
    for _ in range(3):
        planned = a.plan_round()
        a.finish_round(planned, planned.sample_ids, rng.random(len(planned.sample_ids)))
    b.state.load_state_dict(a.state.state_dict(), rounds=a.state.rounds)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    policies[1].load_state_dict(json.loads(json.dumps(policies[0].state_dict())))
    assert b.normalizer.history == a.normalizer.history and len(a.normalizer.history) > 3
    for _ in range(3):
        pa, pb = a.plan_round(), b.plan_round()
        np.testing.assert_array_equal(pa.sample_ids, pb.sample_ids)
        losses = rng.random(len(pa.sample_ids))
        assert a.finish_round(pa, pa.sample_ids, losses) == b.finish_round(pb, pb.sample_ids, losses)


# ----------------------------------------------------------------------------------------------- config checks
@pytest.mark.parametrize(
    "field, value",
    [("lead_sample_filter", "iqr"), ("lead_filter_z", 0.0), ("lead_filter_z", float("nan")),
     ("lead_filter_keep", 0.0), ("lead_filter_keep", 1.5), ("lead_filter_keep", float("nan")),
     ("lead_reward", "blended"), ("lead_reward_scaling", "zscore"),
     ("lead_budget_pace", -0.1), ("lead_budget_pace", 1.5), ("lead_budget_pace", float("nan")),
     ("lead_filter_groups", "families")],
)  # fmt: skip
def test_config_refuses_bad_values_naming_the_field(tmp_path, field, value):
    from trl_lead import LEADConfig

    with pytest.raises(ValueError, match=field):
        LEADConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, **{field: value})
    args = LEADConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False)
    assert (args.lead_sample_filter, args.lead_filter_z, args.lead_reward_scaling) == ("small_loss", 2.5, "minmax")


@pytest.mark.parametrize("field, value", [("lead_sample_filter", "small_loss"), ("lead_reward", "heldout_gain")])
def test_config_refuses_options_that_need_initial_scores_without_them(tmp_path, field, value):
    from trl_lead import LEADConfig

    options = {"lead_sample_filter": "none", field: value}  # the one option under test needs initial scores
    with pytest.raises(ValueError, match=f"{field}='{value}'.*lead_initial_score"):
        LEADConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, lead_initial_score="none",
                   **options)  # fmt: skip
    LEADConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, lead_initial_score="none",
               lead_sample_filter="none")  # fmt: skip


def test_filter_keep_follows_the_budget_when_not_set(tmp_path):
    from trl_lead import LEADConfig
    from trl_lead.resolve import resolve_settings

    common = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, max_steps=10)
    # min(0.5, 1.6 * budget / pool), by hand for a pool of 200: a fraction or a count (0.1 -> 20 samples -> 0.16)
    for budget, keep in [(0.1, 0.16), (0.25, 0.4), (0.04, 0.064), (0.3125, 0.5), (0.9, 0.5), (20, 0.16), (2, 0.016)]:
        args = LEADConfig(**common, lead_budget=budget)
        assert args.lead_filter_keep is None
        assert resolve_settings(args, 200).filter_keep == pytest.approx(keep, rel=1e-12)
    # 0.16 and 0.4 exactly as the decimals (a keep * group size that is a whole number cuts where it should)
    assert resolve_settings(LEADConfig(**common, lead_budget=0.1), 2000).filter_keep == 0.16
    assert resolve_settings(LEADConfig(**common, lead_budget=0.25), 2000).filter_keep == 0.4
    args = LEADConfig(**common, lead_budget=0.1, lead_filter_keep=0.4)  # set: taken as it is
    assert resolve_settings(args, 200).filter_keep == 0.4


def test_options_that_do_not_apply_are_accepted_and_change_nothing(tmp_path):
    from trl_lead import LEADConfig

    common = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False)
    # the defaults (prompt groups, size split) beside settings they do not apply to: accepted, not refused
    for options in ({"lead_sample_filter": "none"}, {"lead_sample_filter": "loss_z"}, {"lead_round_mode": "single"}):
        args = LEADConfig(**common, **options)
        assert (args.lead_filter_groups, args.lead_split_by_size) == ("prompts", True)
    # single-cluster rounds: the size split changes no plan (same seed, same losses, same rounds)
    cluster = np.repeat([0, 1, 2], [10, 6, 8])
    initial = np.random.default_rng(2).random(24)
    plans = {}
    for split in (False, True):
        policy = make_policy("exp3s")
        policy.reset(3, seed=0)
        sel = make_selector(cluster, policy, round_size=4, budget=12, sample_filter="small_loss", filter_keep=0.5,
                            split_by_size=split)  # fmt: skip
        sel.state.set_initial_scores(initial)
        losses = np.random.default_rng(3)
        plans[split] = []
        for _ in range(6):
            planned = sel.plan_round()
            plans[split].append((planned.arms, planned.sample_ids.tolist()))
            sel.finish_round(planned, planned.sample_ids, losses.random(len(planned.sample_ids)))
    assert plans[True] == plans[False] and len({tuple(a) for a, _ in plans[True]}) > 1  # and the arms vary


# ----------------------------------------------------------------------------------------------- the default filter
@pytest.mark.slow
def test_default_filter_keeps_mostly_clean_answers_and_drops_the_bad_source(tmp_path):
    """LEADConfig's default filter on mixture (a) with the warmed-up base: what it lets be selected is far cleaner than
    the pool, and the prompt groups keep much less of the bad source (wrong answers to the tasks' own prompts) than a
    cut within each cluster. Measured here (keep 0.4, the 25% budget's): clean share 78.5% against the pool's 44.6%,
    42 bad-source rows kept against 157 (the same under the second kernels); at keep 0.5: 74%, 60
    against 196. The bounds below leave margins of 13 points and of a factor 1.9."""
    from transformers import AutoModelForCausalLM

    from trl_lead import LEADConfig, LEADSFTTrainer
    from trl_lead.embedded import load_embedded_default
    from trl_lead.pool import BAD_SOURCE, CLUSTER_COLUMN, make_instruction_pool

    base = load_embedded_default()
    pool, _ = make_instruction_pool(mixture="conflict-a")
    args = LEADConfig(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        bf16=False,
        assistant_only_loss=True,
        max_length=64,
        max_steps=2,
        per_device_train_batch_size=16,
        lead_round_size=32,
        lead_budget=0.25,
        lead_cluster_column=CLUSTER_COLUMN,
        save_strategy="no",
        disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(base.model_path)  # a copy: training must not touch the shared base
    trainer = LEADSFTTrainer(model=model, args=args, train_dataset=pool, processing_class=base.tokenizer)
    trainer.train()
    state, keep = trainer.lead_state, trainer.lead_settings.filter_keep
    assert keep == pytest.approx(0.4) and state.filter_group is not None  # the budget's keep; prompt groups
    rows = trainer.lead_pool_rows
    corrupted = np.asarray(pool["is_corrupted"])[rows]
    bad = np.asarray(pool["family"])[rows] == BAD_SOURCE
    kept = state.initial_iu <= state.small_loss_cuts(keep)
    assert 1 - corrupted.mean() < 0.46 and 1 - corrupted[kept].mean() > 0.65
    # the same cut within each cluster (family) instead
    cluster = state.cluster
    cut_of = {k: np.quantile(state.initial_iu[cluster == k], keep, method="inverted_cdf") for k in np.unique(cluster)}
    cut = np.array([cut_of[k] for k in cluster])
    kept_by_cluster = state.initial_iu <= cut
    assert bad[kept].sum() < 0.5 * bad[kept_by_cluster].sum(), (bad[kept].sum(), bad[kept_by_cluster].sum())
