"""The benchmarks' measuring helpers against counts done by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from datasets import Dataset

from benchmarks.loss_signal import task_aucs
from benchmarks.selection import visit_shares, visits_by_thirds


def pairwise_auc(wrong_losses, right_losses) -> float:
    """P(wrong > right) over every pair, ties counted half: the definition, one pair at a time."""
    pairs = list(itertools.product(wrong_losses, right_losses))
    return sum(1.0 if w > r else 0.5 if w == r else 0.0 for w, r in pairs) / len(pairs)


def test_task_aucs_match_the_pairwise_definition_and_skip_tasks_without_both_kinds():
    rng = np.random.default_rng(0)
    n = 60
    family = np.array(["add"] * 25 + ["sort"] * 20 + ["bad_source"] * 15)
    wrong = np.r_[rng.random(25) < 0.4, rng.random(20) < 0.3, np.ones(15, bool)]
    losses = np.round(rng.random(n) + wrong * 0.3, 1)  # rounded: ties between wrong and right answers
    rows = np.arange(n)[rng.random(n) < 0.8]
    got = task_aucs(losses, rows, wrong, family)
    assert sorted(got) == ["add", "sort"]  # the bad source has no right answer to compare with
    for task, value in got.items():
        own = rows[family[rows] == task]
        assert value == pytest.approx(pairwise_auc(losses[own[wrong[own]]], losses[own[~wrong[own]]]))
    assert task_aucs(-losses, rows, wrong, family)["add"] == pytest.approx(1 - got["add"])


def test_visits_by_thirds_and_their_shares():
    rounds = [{"sample_ids": ids} for ids in ([0, 1], [2], [3, 0], [1, 1], [4], [2, 3])]
    thirds = visits_by_thirds(rounds)
    assert [t.tolist() for t in thirds] == [[0, 1, 2], [3, 0, 1, 1], [4, 2, 3]]
    data = Dataset.from_dict(
        {
            "messages": [
                [{"role": "user", "content": "q"}, {"role": "assistant", "content": a}]
                for a in ("ab", "abcd", "a", "abcdef", "abc", "x")
            ],
            "is_corrupted": [False, True, False, True, False, False],
            "family": ["add", "add", "noise", "bad_source", "sort", "sort"],
        }
    )
    shares = visit_shares(data, thirds)  # rounded to 4 places, as the CSVs keep them
    assert shares["wrong_visits_first"] == pytest.approx(1 / 3, abs=1e-4)
    assert shares["wrong_visits_middle"] == pytest.approx(3 / 4, abs=1e-4)  # sample 3 once, sample 1 twice
    assert shares["bad_visits_first"] == pytest.approx(1 / 3, abs=1e-4)  # the noise family's sample 2
    assert shares["bad_visits_last"] == pytest.approx(2 / 3, abs=1e-4)
    lengths = np.array([2, 4, 1, 6, 3, 1])
    assert shares["answer_length_ratio"] == pytest.approx(lengths[:5].mean() / lengths.mean(), abs=1e-4)
    # the pool's quartiles of [1, 1, 2, 3, 4, 6] are 1.25 and 3.75: two of six answers at or below, two at or above;
    # of the five trained, one (sample 2) and two (samples 1 and 3)
    assert shares["short_answers_ratio"] == pytest.approx((1 / 5) / (2 / 6), abs=1e-4)
    assert shares["long_answers_ratio"] == pytest.approx((2 / 5) / (2 / 6), abs=1e-4)
