"""`RoundRun`, the rounds of one run, without a model: a round's life, and a checkpoint taken inside a round that
continues exactly as the run it was taken from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trl_lead.policies import make_policy
from trl_lead.run import RoundRun, round_metrics
from trl_lead.settings import SelectionSettings

pytestmark = pytest.mark.numerics

CLUSTERS = np.repeat(np.arange(4), 10)


def new_run(parameter: torch.nn.Parameter) -> RoundRun:
    settings = SelectionSettings.for_pool(
        len(CLUSTERS), 8, 0.5, "default", rounds=6, initial_score="none", round_mode="single"
    )
    run = RoundRun(settings, make_policy("ucb1"), seed=3)
    run.start(CLUSTERS, [parameter])
    return run


def train_round(run: RoundRun, parameter: torch.nn.Parameter, epoch: int, step: int) -> dict:
    """Plan the round of `epoch`, "train" it (move the parameter, record a loss per sample) and finish it."""
    assert run.begin(epoch, run.selector.plan_round, step, steps=lambda n: n // 4)
    ids = run.plans[epoch].sample_ids
    with torch.no_grad():
        parameter += 0.1 * (epoch + 1)
    losses = 1.0 + np.cos(ids + epoch)
    return run.finish(ids, losses, eta=0.5, cosines_of=lambda u, others: {k: 1.0 for k in others}, step=step + 2)


def test_a_round_begins_finishes_and_the_sampler_epoch_follows_it():
    parameter = torch.nn.Parameter(torch.zeros(5))
    run = new_run(parameter)
    assert run.epoch_to_train(0) == 0
    assert run.begin(0, run.selector.plan_round, 0, steps=lambda n: n // 4)
    assert run.in_flight.end_step == 2 and len(run.plans[0].sample_ids) == 8
    assert run.epoch_to_train(1) == 0 and run.epoch_to_train(2) == 1  # inside the round, then the next
    record = run.finish(run.plans[0].sample_ids, np.ones(8), 1.0, lambda u, others: {}, step=2)
    assert run.in_flight is None and record["step"] == 2 and run.state.rounds == [record]
    assert run.epoch_to_train(2) == 1
    assert set(run.updates) == set(np.unique(CLUSTERS[run.plans[0].sample_ids]))
    assert round_metrics(record)["lead/round"] == 0 and round_metrics(record)["lead/selected"] == 8


def test_a_checkpoint_inside_a_round_continues_as_the_run_it_was_taken_from():
    parameter = torch.nn.Parameter(torch.zeros(5))
    run = new_run(parameter)
    train_round(run, parameter, 0, 0)
    run.begin(1, run.selector.plan_round, 2, steps=lambda n: n // 4)  # a round in flight at the save
    pairs = [(int(i), 0.5) for i in run.plans[1].sample_ids[:3]]
    arrays, meta = run.checkpoint(pairs)
    meta = json.loads(json.dumps(meta))  # as `lead_policy.json` stores it
    restored_parameter = torch.nn.Parameter(parameter.detach().clone())
    restored = RoundRun(run.settings, make_policy("ucb1"), seed=3)
    restored.restore({k: np.array(v) for k, v in arrays.items()}, meta, [restored_parameter])
    assert restored.started and restored.losses.restored == [tuple(p) for p in pairs]
    assert restored.in_flight.end_step == run.in_flight.end_step
    np.testing.assert_array_equal(restored.plans[1].sample_ids, run.plans[1].sample_ids)
    for r, p in ((run, parameter), (restored, restored_parameter)):
        r.finish(r.plans[1].sample_ids, np.full(8, 2.0), 0.5, lambda u, others: {k: 1.0 for k in others}, step=4)
        for epoch in (2, 3):
            train_round(r, p, epoch, 2 * epoch)
    assert [r["sample_ids"] for r in restored.state.rounds] == [r["sample_ids"] for r in run.state.rounds]
    assert [r["reward"] for r in restored.state.rounds] == [r["reward"] for r in run.state.rounds]
    np.testing.assert_array_equal(restored.state.idu, run.state.idu)


@pytest.mark.parametrize("spread, warns", [(0.2, True), (2.0, False)])
def test_starting_rounds_says_when_the_filters_gate_holds_it_back(caplog, spread, warns):
    # Initial scores evenly spaced over `spread` nats in each cluster of 10: interquartile range 0.5 * spread, against
    # the default gate of 0.6
    settings = SelectionSettings.for_pool(len(CLUSTERS), 8, 0.5, "default", rounds=6)
    run = RoundRun(settings, make_policy("exp3s"), seed=3)
    initial = np.tile(np.linspace(0.0, spread, 10), 4)
    with caplog.at_level("WARNING", logger="trl_lead.run"):
        run.start(CLUSTERS, [torch.nn.Parameter(torch.zeros(3))], initial_scores=initial)
    assert ("the small-loss filter excludes nothing" in caplog.text) is warns
    assert (f"interquartile range {spread / 2:.2f} nats" in caplog.text) is warns
