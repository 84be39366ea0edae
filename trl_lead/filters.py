"""`lead_sample_filter`: which eligible samples a round skips, from losses training already measured (numpy only).

Each sample is compared with its cluster's peers at the same stage by a robust z-score (median / MAD), or with the
`"small_loss"` filter by a cut on the initial scores (`loss_z_excluded` gives the rules). No extra forward pass.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

MAD_TO_STD = 1.4826  # MAD * 1.4826 estimates the standard deviation of a normal sample
MIN_PEERS = 5  # fewer finite peers than this: no robust z-score (the filter excludes nothing)


class FilterState(Protocol):
    """What the filter reads of a `LEADState`."""

    iu: np.ndarray
    first_iu: np.ndarray
    use_count: np.ndarray
    initial_iu: np.ndarray | None
    filter_group: np.ndarray | None

    def small_loss_cuts(self, keep: float) -> np.ndarray: ...


def robust_z(values: np.ndarray, peers: np.ndarray) -> tuple[np.ndarray, float]:
    """`(values - median(peers)) / (1.4826 * MAD(peers))` over the finite peers, and that median.

    All zeros (nothing stands out) when there are fewer than `MIN_PEERS` finite peers or their MAD is 0; NaN values
    give NaN (which compares False against any threshold)."""
    values = np.asarray(values, dtype=np.float64)
    peers = np.asarray(peers, dtype=np.float64)
    peers = peers[np.isfinite(peers)]
    if len(peers) < MIN_PEERS:
        return np.zeros(len(values)), math.nan
    center = float(np.median(peers))
    scale = MAD_TO_STD * float(np.median(np.abs(peers - center)))
    if scale <= 0.0:
        return np.zeros(len(values)), center
    return (values - center) / scale, center


def small_loss_cut(scores: np.ndarray, keep: float) -> float:
    """The `ceil(keep * m)`-th lowest of the m finite `scores` (NaN when there are none: it excludes nothing)."""
    finite = scores[np.isfinite(scores)]
    if not len(finite):
        return math.nan
    rank = max(math.ceil(keep * len(finite)) - 1, 0)
    return np.partition(finite, rank)[rank]  # linear time: this runs for every cluster every round


def sorted_by_group(scores: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order sorting samples by group, then by score (NaN last in a group), and where each group starts in it."""
    order = np.lexsort((scores, groups))
    sorted_groups = groups[order]
    return order, np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])


def group_cuts(scores: np.ndarray, groups: np.ndarray, keep: float) -> np.ndarray:
    """Per sample, `small_loss_cut` of the `scores` of its group (`groups`: one label >= 0 per sample), for all
    groups at once."""
    order, starts = sorted_by_group(scores, groups)
    sorted_groups = groups[order]
    finite = np.add.reduceat(np.isfinite(scores[order]).astype(np.int64), starts)
    ranks = np.maximum(np.ceil(keep * finite).astype(np.int64) - 1, 0)
    cut_of_group = np.where(finite > 0, scores[order][starts + ranks], np.nan)
    cuts = np.full(int(groups.max()) + 1, np.nan)
    cuts[sorted_groups[starts]] = cut_of_group
    return cuts[groups]


def group_spread(scores: np.ndarray, groups: np.ndarray) -> float:
    """The median over `groups` (with at least `MIN_PEERS` finite scores) of the interquartile range of their
    `scores`: how far apart the losses of comparable samples lie (NaN when no group is large enough).

    The gate of the small-loss filter (`lead_filter_min_spread`). Where a group's answers split into some that the
    model reads as fitting their prompt and some it reads as belonging elsewhere, the losses spread over a nat per
    token or more (1.04-1.25 on the benchmark mixtures with wrong answers taken from other prompts); where they
    differ only by how long or hard the answer is, they lie close (0.22-0.34 on the near-miss mixture and the
    embedded default pool), and a cut by loss keeps the easy answers instead of the right ones (docs/results.md)."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    groups, scores = np.asarray(groups)[finite], scores[finite]
    order, starts = sorted_by_group(scores, groups)
    ranges = [
        np.subtract(*np.quantile(group, [0.75, 0.25]))
        for group in np.split(scores[order], starts[1:])
        if len(group) >= MIN_PEERS
    ]
    return float(np.median(ranges)) if ranges else math.nan


def unseen_excluded(state: FilterState, members: np.ndarray, threshold: float, keep: float | None) -> np.ndarray:
    """`loss_z_excluded`'s rule for the never-trained `members` (False for the others)."""
    excluded = np.zeros(len(members), bool)
    unseen = state.use_count[members] == 0
    if state.initial_iu is None or not unseen.any():
        return excluded
    scores = state.initial_iu[members].astype(np.float64)
    if keep is None:
        excluded[unseen] = robust_z(scores[unseen], scores)[0] > threshold
    elif state.filter_group is not None:
        # against the sample's own comparison group (`lead_filter_groups="prompts"`), not its cluster
        excluded[unseen] = scores[unseen] > state.small_loss_cuts(keep)[members[unseen]]
    else:
        cut = small_loss_cut(scores, keep)
        if not math.isnan(cut):
            excluded[unseen] = scores[unseen] > cut
    return excluded


def trained_excluded(state: FilterState, members: np.ndarray, threshold: float) -> np.ndarray:
    """`loss_z_excluded`'s rules for the trained `members` (False for the never-trained ones)."""
    use = state.use_count[members]
    excluded = np.zeros(len(members), bool)
    seen = use > 0
    if seen.any():
        first = state.first_iu[members[seen]].astype(np.float64)
        excluded[seen] = robust_z(first, first)[0] > threshold
    revisited = use >= 2
    if revisited.any():
        drop = (state.first_iu[members[revisited]] - state.iu[members[revisited]]).astype(np.float64)
        z, center = robust_z(drop, drop)
        if center > 0.0:
            excluded[revisited] |= -z > threshold
    return excluded


def loss_z_excluded(
    state: FilterState, members: np.ndarray, threshold: float, keep: float | None = None, trained: bool = True
) -> np.ndarray:
    """The `"loss_z"` filter over one cluster's `members` (`"small_loss"` with `keep`): True for each it excludes.

    From losses training already measured (no extra forward pass), each sample against its cluster's peers at the
    same stage, by a robust z-score (median / MAD):

    * never trained: its initial score against every member's initial score (one model, one step); excluded when
      z > `threshold` (the high-loss tail of a cluster is mostly wrong answers: Co-teaching's small-loss idea).
      Without initial scores (`lead_initial_score="none"`) unseen samples are never excluded.
      With `keep` (the `"small_loss"` filter) the rule is stricter: an unseen sample is excluded unless its initial
      score is among the lowest `keep` share of every member's (all members, so the cut does not move as the
      cluster is used up; a NaN score is never excluded). On generated pools with 20-35% wrong answers to a task's
      own prompts, the lower part of a task by the warmed-up model's loss holds few of them (docs/results.md).
      Where the state has comparison groups (`LEADState.set_filter_groups`), the cut is that of the sample's group
      instead of its cluster's.
    * trained (these two rules only with `trained=True`: `lead_filter_revisits`): its first-visit IU against the
      first-visit IUs of the cluster's trained members; excluded when z > `threshold`. (Those were measured at
      different steps; the cluster's loss falls slowly next to the gap between a wrong answer and a right one.)
    * trained twice or more: its loss drop since its first visit (first-visit IU minus last IU) against the drops of
      the cluster's other revisited members; excluded when the drop lies more than `threshold` robust standard
      deviations below theirs while their median drop is positive: its loss did not fall where its peers' did
      ("hard to learn": Swayamdipta et al. 2020's data maps, Pleiss et al. 2020's AUM).
    """
    members = np.asarray(members, dtype=np.int64)
    excluded = unseen_excluded(state, members, threshold, keep)
    if trained:
        excluded |= trained_excluded(state, members, threshold)
    return excluded
