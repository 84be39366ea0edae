"""Calibration of ``ProxyTraining`` on real runs' ``lead_rounds.jsonl`` (``ProxyTraining.from_rounds``).

The recorded rounds are replayed noise-free through the trainer's own ``finish_round`` on a surrogate, and the
surrogate's per-cluster dynamics are fitted by a grid search to the recorded loss drops (``from_rounds`` explains
what is read and how). numpy only.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from typing import Any

import numpy as np

from envs.round_env import ActionPolicy
from envs.surrogate import SCALAR_DEFAULTS, Surrogate, World, per_cluster
from trl_lead.selection import LEADState, PlannedRound, RoundSelector, predicted_drop
from trl_lead.settings import SelectionSettings, preset_settings

__all__ = ["NOISE_SHARE", "calibrate", "read_rounds", "teacher_forced_drops"]

_SELECTION_SETTINGS = ("smoothing", "gradient_correction", "initial_score", "max_reuse")  # from the preset
_CONSTRUCTOR_DEFAULTS = {
    "heterogeneity": 0.3,
    "memory_decay": 0.0005,
    "noise_timescale": 1000.0,
    "cross_cluster_cosine": 0.2,
}
NOISE_SHARE = 0.1  # calibrated observation noise: this share of the cluster's initial loss (not identifiable)
_FIT_START = {"skill_rate": 0.01, "drift_level": -0.3, "forgetting": 0.005, "memorization": 0.3}
FIT_GRIDS: dict[str, np.ndarray] = {
    "skill_rate": np.geomspace(3e-4, 0.3, 10),
    "drift_level": np.array([0.0, -0.2, -0.5, -1.0, -1.5, -2.5, -4.0]),
    "forgetting": np.array([0.0, 0.001, 0.003, 0.01, 0.03, 0.1]),
    "memorization": np.array([0.0, 0.1, 0.3, 0.5, 0.8]),
}
#: Coordinate-descent stages: parameters searched jointly over their grids' product, per cluster or shared by all
#: clusters. Drift level, forgetting and memorisation are shared: a run has only a handful of visits per cluster,
#: and fitting the drift level per cluster too (tried on the embedded default: 3 runs, one held out) fitted the
#: calibration runs no better, the held-out run slightly worse, and took 4x longer.
_FIT_STAGES: tuple[tuple[tuple[str, ...], bool], ...] = (
    (("skill_rate",), False),
    (("drift_level",), True),
    (("forgetting",), True),
    (("memorization",), True),
)


def read_rounds(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The round records of a ``lead_rounds.jsonl`` (or of the output folder holding one), sorted by round."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "lead_rounds.jsonl")
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records:
        raise ValueError(f"{path} holds no round records.")
    missing = [key for key in ("round", "cluster", "sample_ids", "reward") if key not in records[0]]
    if missing:
        raise ValueError(f"{path} does not look like a lead_rounds.jsonl: records lack {missing}.")
    return sorted(records, key=lambda r: r["round"])


def _arms(record: dict[str, Any]) -> list[int]:
    if record.get("warmup"):
        return []
    cluster = record["cluster"]
    return [int(c) for c in cluster] if isinstance(cluster, list) else [int(cluster)]


def _labels(records: list[dict[str, Any]], k: int, clusters: Any, overrides: dict[str, Any]) -> np.ndarray:
    """Cluster label per sample id: given, or attributed from the records (filled with the sizes)."""
    if clusters is not None:
        labels = np.asarray(clusters, dtype=np.int64)
        if labels.ndim != 1 or labels.min() < 0 or labels.max() >= k:
            raise ValueError(f"`clusters` must be one label in [0, {k}) per sample of the pool.")
        return labels
    max_id = max(max(r["sample_ids"], default=-1) for r in records)
    known: dict[int, int] = {}
    unknown: list[int] = []
    for record in records:
        arms = _arms(record)
        ids = record["sample_ids"]
        own = len(ids) - int(record.get("filled", 0))
        if len(arms) == 1:  # single mode: the plan lists the chosen cluster's samples first, then the fill
            known.update({int(i): arms[0] for i in ids[:own]})
            unknown += [int(i) for i in ids[own:]]
        else:
            unknown += [int(i) for i in ids]
    if any(i not in known for i in unknown):
        if any(len(_arms(r)) > 1 for r in records):
            raise ValueError("Mixture-mode records do not say which cluster each sample is from: pass `clusters`.")
    if overrides.get("sizes") is not None:
        sizes = np.asarray(overrides["sizes"], dtype=np.int64)
    else:
        n = int(overrides.get("pool_size", max_id + 1))
        sizes = np.full(k, n // k)
        sizes[: n - sizes.sum()] += 1
    n = int(sizes.sum())
    if n <= max_id:
        raise ValueError(f"The records hold sample id {max_id}, beyond the pool of {n}; pass `sizes` or `pool_size`.")
    labels = np.full(n, -1, dtype=np.int64)
    for i, c in known.items():
        labels[i] = c
    # Fill samples never seen as their own cluster's, and samples never selected, take the room the sizes leave
    room = np.maximum(sizes - np.bincount(labels[labels >= 0], minlength=k), 0)
    free = np.flatnonzero(labels < 0)
    labels[free] = np.repeat(np.arange(k), room)[: len(free)] if room.sum() >= len(free) else np.arange(len(free)) % k
    return labels


def _replay(
    records: list[dict[str, Any]],
    labels: np.ndarray,
    base: np.ndarray,
    params: dict[str, np.ndarray],
    common: dict[str, Any],
) -> np.ndarray:
    """Teacher-forced, noise-free replay of the recorded rounds (same ids, same order) with a gap of 1 per cluster.

    Returns the per-(round, cluster) loss drops ``d`` (NaN where absent).
    """
    k = len(params["skill_rate"])
    surrogate = Surrogate(
        labels, base, np.ones(len(labels)), params["skill_rate"], params["memorization"], params["forgetting"],
        params["drift_level"], np.zeros(k), common["memory_decay"], common["noise_timescale"],
    )  # fmt: skip
    state = LEADState(labels, num_clusters=k)
    if common["initial_score"] == "loss":
        state.set_initial_scores(base)
    settings = SelectionSettings(
        round_size=common["round_size"],
        budget=len(labels),
        max_reuse=10**4,
        smoothing=common["smoothing"],
        gradient_correction=common["gradient_correction"],
    )
    adapter = ActionPolicy(k)
    world = World(
        RoundSelector(state, adapter, settings), surrogate, adapter, common["batch_size"], common["eta"],
        common["same_cluster_cosine"], common["cross_cluster_cosine"],
    )  # fmt: skip
    d = np.full((len(records), k), np.nan)
    for r, record in enumerate(records):
        ids = np.asarray(record["sample_ids"], dtype=np.int64)
        planned = PlannedRound(r, _arms(record), ids, np.zeros(len(ids), bool), warmup=bool(record.get("warmup")))
        for key, value in world.finish(planned, None)["correction"].items():
            d[r, int(key)] = value["d"]
    return d


def teacher_forced_drops(records: list[dict[str, Any]], labels: np.ndarray, fitted: dict[str, Any]) -> np.ndarray:
    """The loss drops ``d`` a calibrated proxy predicts for recorded rounds replayed with their own sample ids.

    ``fitted``: ``ProxyTraining.calibration["fitted"]``; ``labels``: the pool's cluster per sample id. Per (round,
    cluster), NaN where the cluster was not trained. The proxy's own selection is left out (the rounds train the
    recorded samples), so this is the fitted dynamics' best case on those rounds.
    """
    labels = np.asarray(labels, dtype=np.int64)
    initial = np.asarray(fitted["initial_loss"], dtype=np.float64)
    params = {name: np.asarray(fitted[name], dtype=np.float64) for name in _FIT_START}
    common = {name: fitted[name] for name in (*_SELECTION_SETTINGS, *_CONSTRUCTOR_DEFAULTS)}
    common.update({name: fitted[name] for name in ("round_size", "batch_size", "eta", "same_cluster_cosine")})
    gap = initial - np.asarray(fitted["floor"], dtype=np.float64)
    return gap * _replay(records, labels, initial[labels], params, common)


def _invert_cosine(eta: float, d: float, d_last: float, drop: float) -> float | None:
    """The cosine at which ``predicted_drop(eta, d, d_last, cos)`` equals ``drop`` (increasing in cos), or None."""
    low, high = -1.0, 1.0
    if not predicted_drop(eta, d, d_last, low)[0] <= drop <= predicted_drop(eta, d, d_last, high)[0]:
        return None
    for _ in range(50):
        mid = (low + high) / 2
        if predicted_drop(eta, d, d_last, mid)[0] < drop:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _initial_losses(
    run: list[dict[str, Any]], labels: np.ndarray, sizes: np.ndarray, common: dict[str, Any]
) -> np.ndarray:
    """Per-cluster initial loss of one run: its first record's mean IDU, with the trained samples' change added back.

    Each sample the first round trained moved its IDU by ``-(1 - b) * (d + correction)`` from its initial score, so
    the cluster's mean moved by that times the share of the cluster trained. Without initial scores (clusters never
    observed: None), the first mean IDU recorded for the cluster.
    """
    k = len(sizes)
    first = next(r for r in run if r.get("cluster_mean_idu") is not None)
    initial = np.array([np.nan if v is None else float(v) for v in first["cluster_mean_idu"]])
    counts = np.bincount(labels[np.asarray(first["sample_ids"], dtype=np.int64)], minlength=k)
    b = float(common["smoothing"])
    for key, value in (first.get("correction") or {}).items():
        c = int(key)
        drop = value["predicted_drop"] if common["gradient_correction"] else 0.0
        if np.isfinite(initial[c]) and common["initial_score"] == "loss":
            initial[c] += counts[c] * (1 - b) * (value["d"] + drop) / sizes[c]
    for c in np.flatnonzero(~np.isfinite(initial)):
        seen = [r["cluster_mean_idu"][c] for r in run if r.get("cluster_mean_idu") and r["cluster_mean_idu"][c]]
        initial[c] = float(seen[0]) if seen else math.nan
    return initial


def _correction_inputs(runs: list[list[dict[str, Any]]], overrides: dict[str, Any]) -> tuple[float, float, int, int]:
    """``eta`` and the same-cluster cosine that reproduce the recorded gradient corrections (medians).

    Where ``beta = 0`` the correction is ``eta * d`` exactly; where ``0 < beta < 1`` the cosine is found by bisection
    (the correction increases with it) given ``d``, the cluster's previous ``d`` and ``eta``.
    """
    etas, triples = [], []
    for run in runs:
        last_d: dict[str, float] = {}
        for record in run:
            for key, value in (record.get("correction") or {}).items():
                d, drop, beta = value["d"], value["predicted_drop"], value["beta"]
                if beta == 0 and d > 1e-6:
                    etas.append(drop / d)
                if 0 < beta < 1 and last_d.get(key, 0.0) > 0 and d > 0:
                    triples.append((d, last_d[key], drop))
                last_d[key] = d
    eta = float(overrides.get("eta", np.median(etas) if etas else 1.0))
    found = [c for c in (_invert_cosine(eta, *x) for x in triples) if c is not None]
    cosine = float(overrides.get("same_cluster_cosine", np.median(found) if found else 1.0))
    return eta, cosine, len(etas), len(found)


def calibrate(
    runs: list[list[dict[str, Any]]], clusters: Any, overrides: dict[str, Any], fit: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Constructor arguments fitted to one or more runs' records, and a report (see ``ProxyTraining.from_rounds``).

    Args:
        runs (`list[list[dict]]`): each run's round records (:func:`read_rounds`).
        clusters (array-like or `None`): the pool's cluster label per sample id, when known.
        overrides (`dict`): constructor arguments that replace (and fix) fitted values.
        fit (`bool`): fit the dynamics by least squares; False keeps the defaults.
    """
    records = [record for run in runs for record in run]
    first = next((r for r in records if r.get("cluster_mean_idu") is not None), None)
    if first is None:
        raise ValueError("The records hold no `cluster_mean_idu`; cannot tell the number of clusters.")
    k = len(first["cluster_mean_idu"])
    preset = preset_settings(overrides.get("preset", "default"))
    defaults = {**{name: preset[name] for name in _SELECTION_SETTINGS}, **_CONSTRUCTOR_DEFAULTS}
    common = {name: overrides.get(name, value) for name, value in defaults.items()}
    labels = _labels(records, k, clusters, overrides)
    sizes = np.bincount(labels, minlength=k)
    if (sizes == 0).any():
        raise ValueError(f"Clusters {np.flatnonzero(sizes == 0).tolist()} have no sample; pass `clusters` or `sizes`.")
    round_size, batch_size, budget = _round_shape(runs, records, overrides)
    initial = _initial_loss(runs, labels, sizes, common, overrides)
    eta, same_cos, eta_from, cosine_from = _correction_inputs(runs, overrides)
    common.update(round_size=round_size, batch_size=batch_size, eta=eta, same_cluster_cosine=same_cos)

    params = {name: per_cluster(name, overrides.get(name, value), k) for name, value in _FIT_START.items()}
    drops = _DropFit(runs, labels, initial, common, overrides)
    fit = fit and bool(drops.has.any())  # records without `correction`: nothing to fit on
    replays = drops.search(params, overrides) if fit else 0
    replayed = drops.replay_all(params)
    gap, _ = drops.gap_and_sse(replayed)
    if not fit and drops.fixed_gap is None:
        gap = np.clip(initial - SCALAR_DEFAULTS["floor"], 0.0, None)
    noise = per_cluster("noise", overrides["noise"], k) if "noise" in overrides else NOISE_SHARE * initial

    fitted = {
        "sizes": sizes.tolist(),
        "initial_loss": initial.tolist(),
        "floor": (initial - gap).tolist(),
        "noise": noise.tolist(),
        "batch_size": batch_size,
        "round_size": round_size,
        "budget": budget,
        "eta": eta,
        "same_cluster_cosine": same_cos,
        **{name: value.tolist() for name, value in params.items()},
        **{name: common[name] for name in (*_SELECTION_SETTINGS, *_CONSTRUCTOR_DEFAULTS)},
    }
    report = {
        "fitted": dict(fitted),
        "runs": len(runs),
        "rounds": len(records),
        **drops.quality(replayed, gap),
        "replays": replays,
        "eta_from": eta_from,
        "cosine_from": cosine_from,
    }
    return fitted, report


def _round_shape(
    runs: list[list[dict[str, Any]]], records: list[dict[str, Any]], overrides: dict[str, Any]
) -> tuple[int, int, Any]:
    """Round size (the largest round), batch size (round size over optimizer steps per round) and budget (the
    largest ``selected``), each unless overridden."""
    round_size = int(overrides.get("round_size", max(len(r["sample_ids"]) for r in records)))
    steps = np.concatenate([np.diff([r["step"] for r in run if "step" in r]) for run in runs])
    steps = steps[steps > 0]
    batch_size = int(overrides.get("batch_size", math.ceil(round_size / np.median(steps)) if len(steps) else 16))
    budget = overrides.get("budget", max(int(r.get("selected", 0)) for r in records) or 0.25)
    return round_size, batch_size, budget


def _initial_loss(
    runs: list[list[dict[str, Any]]],
    labels: np.ndarray,
    sizes: np.ndarray,
    common: dict[str, Any],
    overrides: dict[str, Any],
) -> np.ndarray:
    """Per cluster, the initial loss: the mean over runs of :func:`_initial_losses` (a cluster no run measured: the
    mean of the others), unless overridden."""
    if "initial_loss" in overrides:
        return per_cluster("initial_loss", overrides["initial_loss"], len(sizes))
    with np.errstate(all="ignore"):
        initial = np.nanmean([_initial_losses(run, labels, sizes, common) for run in runs], axis=0)
    return np.where(np.isfinite(initial), initial, np.nanmean(initial) if np.isfinite(initial).any() else 1.0)


class _DropFit:
    """The weighted least squares of ``calibrate``: recorded per-(round, cluster) loss drops ``d`` against the same
    rounds replayed noise-free, with the learnable gap per cluster in closed form."""

    def __init__(
        self,
        runs: list[list[dict[str, Any]]],
        labels: np.ndarray,
        initial: np.ndarray,
        common: dict[str, Any],
        overrides: dict[str, Any],
    ) -> None:
        records = [record for run in runs for record in run]
        k = len(initial)
        self.runs, self.labels, self.initial, self.common, self.k = runs, labels, initial, common, k
        self.base = initial[labels]
        self.real = np.full((len(records), k), np.nan)  # recorded loss drop d per (round, cluster), runs stacked
        self.weight = np.zeros((len(records), k))  # samples of the cluster in the round
        for r, record in enumerate(records):
            for key, value in (record.get("correction") or {}).items():
                self.real[r, int(key)] = value["d"]
            self.weight[r] = np.bincount(labels[np.asarray(record["sample_ids"], dtype=np.int64)], minlength=k)
        self.has = np.isfinite(self.real)
        self.fixed_gap = initial - per_cluster("floor", overrides["floor"], k) if "floor" in overrides else None

    def replay_all(self, trial: dict[str, np.ndarray]) -> np.ndarray:
        """Every run's drops replayed with the dynamics ``trial`` (unit gap), stacked."""
        return np.concatenate([_replay(run, self.labels, self.base, trial, self.common) for run in self.runs])

    def gap_and_sse(self, replayed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per cluster: the gap (weighted least squares, clipped to [0, initial]) and the residual sum of squares."""
        ok = self.has & np.isfinite(replayed)
        x, y, w = np.where(ok, replayed, 0.0), np.where(ok, self.real, 0.0), np.where(ok, self.weight, 0.0)
        if self.fixed_gap is None:
            sxx, sxy = (w * x * x).sum(0), (w * x * y).sum(0)
            gap = np.clip(np.where(sxx > 0, sxy / np.maximum(sxx, 1e-300), 0.0), 0.0, self.initial)
        else:
            gap = self.fixed_gap
        return gap, (w * (y - gap * x) ** 2).sum(0)

    def search(self, params: dict[str, np.ndarray], overrides: dict[str, Any]) -> int:
        """Coordinate descent over ``_FIT_STAGES`` (two sweeps; the second refits the per-cluster parameters only),
        updating ``params`` in place; the number of replays it took."""
        stages = [(tuple(n for n in names if n not in overrides), shared) for names, shared in _FIT_STAGES]
        replays = 0
        for sweep in range(2):
            for names, shared in stages:
                if not names or (sweep and shared):
                    continue
                grid = list(itertools.product(*(FIT_GRIDS[name] for name in names)))
                sse = np.empty((len(grid), self.k))
                for g, values in enumerate(grid):
                    trial = {**params, **{name: np.full(self.k, value) for name, value in zip(names, values)}}
                    sse[g] = self.gap_and_sse(self.replay_all(trial))[1]
                replays += len(grid) * len(self.runs)
                best = np.full(self.k, int(np.argmin(sse.sum(1)))) if shared else np.argmin(sse, axis=0)
                for i, name in enumerate(names):
                    params[name] = np.array([grid[g][i] for g in best], dtype=np.float64)
        return replays

    def quality(self, replayed: np.ndarray, gap: np.ndarray) -> dict[str, list]:
        """Per cluster: visits fitted, the R^2 and the RMS residual of the fitted drops."""
        ok = self.has & np.isfinite(replayed)
        residual = np.where(ok, self.real - gap * replayed, 0.0)
        visits = ok.sum(0)
        mean_real = np.where(ok, self.real, 0.0).sum(0) / np.maximum(visits, 1)
        total = (np.where(ok, self.real - mean_real, 0.0) ** 2).sum(0)
        with np.errstate(all="ignore"):
            r2 = np.where(total > 0, 1 - (residual**2).sum(0) / total, np.nan)
        return {
            "visits": visits.tolist(),
            "r2_of_drops": r2.tolist(),
            "rms_residual_of_drops": np.sqrt((residual**2).sum(0) / np.maximum(visits, 1)).tolist(),
        }
