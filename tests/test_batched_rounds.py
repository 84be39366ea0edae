"""Every policy in every round mode: a mixture round of a policy without `probabilities` is its batched round
(`allocate`), checked by hand on one round; and each of the ten policies trains under the default `LEADConfig` and
under single-cluster rounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import CPU_TRAINING_ARGS

from trl_lead import LEADConfig, LEADSFTTrainer
from trl_lead.policies import POLICIES, make_policy
from trl_lead.selection import LEADState, RoundSelector, round_distribution
from trl_lead.settings import SelectionSettings

BATCHED = [name for name, cls in POLICIES.items() if not hasattr(cls, "probabilities")]


def test_the_five_policies_without_probabilities_are_the_batched_ones():
    assert sorted(BATCHED) == ["d-ucb", "greedy", "sw-ucb", "thompson", "ucb1"]


def ucb1_after(rewards: dict[int, list[float]]):
    policy = make_policy("ucb1")
    policy.reset(3, seed=0)
    for arm, values in rewards.items():
        for value in values:
            policy.update(arm, value)
    return policy


def test_ucb1_batched_round_by_hand():
    # n = (2, 1, 1), t = 4; index = mean + sqrt(2 ln 4 / n):
    #   arm 0: 0.5 + sqrt(2 ln 4 / 2) = 1.677, arm 1: 0.2 + sqrt(2 ln 4) = 1.865, arm 2: 0.9 + sqrt(2 ln 4) = 2.565
    index = [0.5 + math.sqrt(math.log(4)), 0.2 + math.sqrt(2 * math.log(4)), 0.9 + math.sqrt(2 * math.log(4))]
    assert np.argmax(index) == 2 and np.argsort(index).tolist() == [0, 1, 2]
    policy = ucb1_after({0: [1.0, 0.0], 1: [0.2], 2: [0.9]})
    # no feedback inside the round: the index does not move, the arm of highest index takes every slot
    assert policy.allocate(8).tolist() == [0, 0, 8]
    assert policy.allocate(8, np.array([True, True, False])).tolist() == [0, 8, 0]  # arm 2 masked: arm 1 next
    assert policy.t == 4  # allocating learns nothing


def test_ucb1_first_batched_round_shares_the_slots_among_never_played_arms():
    policy = ucb1_after({1: [0.5]})
    counts = policy.allocate(600)
    assert counts.sum() == 600 and counts[1] == 0
    assert 200 < counts[0] < 400 and 200 < counts[2] < 400  # ties at random: binomial(600, 1/2) sd 12


def test_thompson_batched_round_is_one_posterior_draw_per_slot():
    policy = make_policy("thompson", sigma=0.5)
    policy.reset(3, seed=7)
    for arm, reward in [(0, 1.0), (1, -0.5), (1, 0.25), (2, 0.0)]:
        policy.update(arm, reward)
    replay = make_policy("thompson")
    replay.load_state_dict(policy.state_dict())
    # by hand: theta[s, i] = sums_i / (n_i + 1) + sigma / sqrt(n_i + 1) * z[s, i], each slot to its argmax
    rng = np.random.default_rng()  # the policy's own stream, from its state
    rng.bit_generator.state = policy.state_dict()["rng"]
    z = rng.standard_normal((16, 3))
    n = np.array([1.0, 2.0, 1.0]) + 1.0
    theta = np.array([1.0, -0.25, 0.0]) / n + 0.5 / np.sqrt(n) * z
    mask = np.array([True, True, False])
    theta[:, ~mask] = -np.inf
    expected = np.bincount(theta.argmax(axis=1), minlength=3)
    assert policy.allocate(16, mask).tolist() == expected.tolist()
    # the same draws as 16 successive `select` calls with no update between them
    successive = np.bincount([replay.select(mask) for _ in range(16)], minlength=3)
    assert successive.tolist() == expected.tolist()


def test_selector_splits_a_mixture_round_by_the_batched_round():
    cluster = np.repeat([0, 1, 2], 10)
    policy = ucb1_after({0: [1.0, 0.0], 1: [0.2], 2: [0.9]})
    settings = SelectionSettings(round_size=8, budget=30, sample_filter="none", split_by_size=False, reward="mean_idu")
    selector = RoundSelector(LEADState(cluster), policy, settings, seed=0)
    planned = selector.plan_round()
    assert planned.probabilities == [0.0, 0.0, 1.0] and planned.arms == [2]
    assert (cluster[planned.sample_ids] == 2).all() and len(planned.sample_ids) == 8
    selector.finish_round(planned, planned.sample_ids, np.full(8, 1.0))
    assert policy.counts.tolist() == [2.0, 1.0, 2.0]  # the round's one reward went to arm 2
    assert round_distribution(policy, np.ones(3, bool), 8).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("mode", ["default", "single"])
@pytest.mark.parametrize("name", list(POLICIES))
def test_every_policy_trains_in_every_round_mode(tmp_path, pool, tokenizer, make_model, name, mode):
    extra = {"lead_round_mode": "single"} if mode == "single" else {}
    args = LEADConfig(
        output_dir=str(tmp_path),
        **CPU_TRAINING_ARGS,
        per_device_train_batch_size=4,
        max_steps=4,
        disable_tqdm=True,
        lead_cluster_column="family_id",
        lead_round_size=8,
        lead_budget=0.5,
        lead_policy=name,
        **extra,
    )
    trainer = LEADSFTTrainer(model=make_model(), args=args, train_dataset=pool, processing_class=tokenizer)
    trainer.train()
    rounds = trainer.lead_state.rounds
    assert trainer.state.global_step == 4 and len(rounds) == 2
    for record in rounds:
        assert len(record["sample_ids"]) == 8
        if mode == "single":
            assert isinstance(record["cluster"], int)
        else:
            shares = np.asarray(record["probabilities"])
            assert shares.sum() == pytest.approx(1.0)
            if name in BATCHED:  # a batched round's shares are counts of its 8 slots
                np.testing.assert_allclose(shares * 8, np.round(shares * 8), atol=1e-9)
    assert trainer.lead_selector.policy.t >= 1  # the policy was rewarded
