"""The tables, statistics and plots of ``envs.benchmark``'s runs: CSV in and out, regret and quality tables with
95% t-intervals, rank agreement (Kendall tau, split halves), and the curves. numpy only (matplotlib for the plots).
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trl_lead.files import atomic_write

_T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}


def t_quantile_975(df: int) -> float:
    """Two-sided 95% Student-t quantile without scipy: a table below 5 degrees of freedom, above it the
    Cornish-Fisher expansion to 1/df^4 (Abramowitz & Stegun 26.7.5), off by under 1e-3."""
    if df < 1:
        return math.nan
    if df in _T_975:
        return _T_975[df]
    z = 1.959963984540054
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * df**4)
    )


def mean_ci(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and half-width of the 95% t-interval over ``axis`` (the seeds)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        return mean, np.full_like(mean, np.nan)
    return mean, t_quantile_975(n - 1) * values.std(axis=axis, ddof=1) / math.sqrt(n)


# --------------------------------------------------------------------------- outputs
def write_csv(path: Path, by_policy: dict[str, list[dict[str, Any]]]) -> None:
    """Long format, one row per (policy, seed, step); gzip-compressed when ``path`` ends in ``.gz``."""

    with atomic_write(path, "wb") as raw:
        # fixed name and mtime in the gzip header: same results, same bytes
        gz = path.suffix == ".gz"
        fh = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) if gz else raw
        out = io.TextIOWrapper(fh, encoding="utf-8", newline="\n")
        with_quality = has_quality(by_policy)
        out.write("policy,seed,step,reward,regret,cumulative_regret" + (",quality\n" if with_quality else "\n"))
        for name, runs in by_policy.items():
            for run in runs:
                cumulative = np.cumsum(run["regret"])
                for step, (reward, regret, cum) in enumerate(zip(run["reward"], run["regret"], cumulative)):
                    quality = f",{run['quality'][step + 1]:.6g}" if with_quality else ""
                    out.write(f"{name},{run['seed']},{step},{reward:.6g},{regret:.6g},{cum:.6g}{quality}\n")
        out.detach()  # flushes into `fh` and leaves it open: atomic_write syncs and closes the file itself
        if gz:
            fh.close()  # writes the gzip trailer; `raw` stays open


def has_quality(by_policy: dict[str, list[dict[str, Any]]]) -> bool:
    """Whether every run carries a ``quality`` curve (the env reports the quality of the model it trains)."""
    runs = [run for runs in by_policy.values() for run in runs]
    return bool(runs) and all("quality" in run for run in runs)


def quality_rows(by_policy: dict[str, list[dict[str, Any]]], baseline: str = "uniform") -> list[dict[str, Any]]:
    """Per policy, best first: final quality (mean over seeds, 95% t-interval), and the paired difference against
    ``baseline`` over the seeds both ran (mean, 95% t-interval; NaN without a baseline), and the mean reward.

    The final quality of a run is its last finite ``quality`` (the env evaluates when the episode ends)."""

    def final(run: dict[str, Any]) -> float:
        finite = run["quality"][np.isfinite(run["quality"])]
        return float(finite[-1]) if finite.size else math.nan

    finals = {name: {run["seed"]: final(run) for run in runs} for name, runs in by_policy.items()}
    rows = []
    for name, runs in by_policy.items():
        values = np.array(list(finals[name].values()))
        mean, half = mean_ci(values)
        row = {
            "policy": name,
            "final_quality": float(mean),
            "quality_half": float(half),
            "mean_reward": float(np.mean([run["reward"].mean() for run in runs])),
            "vs_baseline": math.nan,
            "vs_baseline_half": math.nan,
        }
        if baseline in finals and name != baseline:
            seeds = sorted(set(finals[name]) & set(finals[baseline]))
            if seeds:
                diff_mean, diff_half = mean_ci(np.array([finals[name][s] - finals[baseline][s] for s in seeds]))
                row["vs_baseline"], row["vs_baseline_half"] = float(diff_mean), float(diff_half)
        rows.append(row)
    return sorted(rows, key=lambda r: -r["final_quality"] if math.isfinite(r["final_quality"]) else math.inf)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two paired samples (ties allowed; NaN when either side is all ties or n < 2)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    pairs_x, pairs_y = np.count_nonzero(dx), np.count_nonzero(dy)
    if pairs_x == 0 or pairs_y == 0:
        return math.nan
    return float(np.sum(dx * dy) / math.sqrt(pairs_x * pairs_y))


def final_quality_per_seed_from_csv(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """Final quality per policy and seed from a CSV this module wrote (its ``quality`` column): per (policy, seed)
    the last finite quality."""
    opener = gzip.open if str(path).endswith(".gz") else open
    finals: dict[str, dict[str, float]] = {}
    with opener(path, "rt", encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
        if "quality" not in header:
            raise ValueError(f"{path} has no quality column: benchmark an env that reports info['quality'].")
        column = header.index("quality")
        for line in fh:
            fields = line.strip().split(",")
            value = float(fields[column])
            if math.isfinite(value):
                finals.setdefault(fields[0], {})[fields[1]] = value
    return finals


def runs_from_csv(path: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """The runs of a CSV this module wrote, as ``run_benchmark`` returns them (times per step NaN: the CSV has none;
    the quality before training, which the CSV does not hold either, NaN)."""
    rows: dict[tuple[str, int], list[list[str]]] = {}
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
        for line in fh:
            row = line.strip().split(",")
            rows.setdefault((row[0], int(row[1])), []).append(row)
    by_policy: dict[str, list[dict[str, Any]]] = {}
    for (policy, seed), run_rows in rows.items():
        run_rows.sort(key=lambda row: int(row[2]))
        column = {name: i for i, name in enumerate(header)}
        run = {
            "policy": policy,
            "seed": seed,
            "reward": np.array([float(row[column["reward"]]) for row in run_rows]),
            "regret": np.array([float(row[column["regret"]]) for row in run_rows]),
            "policy_us": math.nan,
            "step_us": math.nan,
        }
        if "quality" in column:
            run["quality"] = np.array([math.nan] + [float(row[column["quality"]]) for row in run_rows])
        by_policy.setdefault(policy, []).append(run)
    return by_policy


def final_quality_from_csv(path: str | os.PathLike[str]) -> dict[str, float]:
    """Mean final quality per policy from a CSV this module wrote: the mean over seeds of each seed's last finite
    quality."""
    return {policy: float(np.mean(list(v.values()))) for policy, v in final_quality_per_seed_from_csv(path).items()}


def split_half_taus(finals: dict[str, dict[str, float]], max_splits: int = 1000) -> list[float]:
    """How reproducible a ranking by mean final quality is with the seeds at hand: Kendall tau-b between the rankings
    that two disjoint halves of the seeds give (seeds every policy ran; the odd one out goes to the second half), over
    every split, or over `max_splits` random ones (seeded) when there are more. A proxy cannot agree with a live
    ranking much better than the live ranking agrees with itself."""
    policies = sorted(finals)
    seeds = sorted(set.intersection(*(set(finals[p]) for p in policies)))
    values = np.array([[finals[p][s] for s in seeds] for p in policies])
    n, half = len(seeds), len(seeds) // 2
    if math.comb(n, half) <= max_splits:
        firsts = [list(first) for first in itertools.combinations(range(n), half)]
    else:
        rng = np.random.default_rng(0)
        firsts = [sorted(rng.choice(n, half, replace=False).tolist()) for _ in range(max_splits)]
    taus = []
    for first in firsts:
        second = [i for i in range(n) if i not in first]
        taus.append(kendall_tau(values[:, first].mean(axis=1), values[:, second].mean(axis=1)))
    return taus


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return cpu


def machine_description() -> str:
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.platform()}, Python {platform.python_version()}, nproc {nproc} ({cpu_name()})"


def summary_rows(
    by_policy: dict[str, list[dict[str, Any]]], window: tuple[int, int] | None = None
) -> list[dict[str, Any]]:
    """Per policy: final cumulative regret (mean, 95% interval), mean reward, times; and the regret
    accumulated in steps ``[window[0], window[1])`` if given (e.g. just after a change point)."""
    rows = []
    for name, runs in by_policy.items():
        final = np.array([run["regret"].sum() for run in runs])
        mean, half = mean_ci(final)
        row = {
            "policy": name,
            "final_regret": float(mean),
            "ci_low": float(mean - half),
            "ci_high": float(mean + half),
            "mean_reward": float(np.mean([run["reward"].mean() for run in runs])),
            "policy_us": float(np.median([run["policy_us"] for run in runs])),
            "step_us": float(np.median([run["step_us"] for run in runs])),
        }
        if window is not None:
            w_mean, w_half = mean_ci(np.array([run["regret"][window[0] : window[1]].sum() for run in runs]))
            row["window_regret"], row["window_half"] = float(w_mean), float(w_half)
        rows.append(row)
    return rows


def write_markdown(
    path: Path,
    by_policy: dict[str, list[dict[str, Any]]],
    header: dict[str, Any],
    command: str,
    window: tuple[int, int] | None = None,
    rank_against: str | None = None,
) -> list[dict[str, Any]]:
    rows = summary_rows(by_policy, window)
    extra = f" regret in steps [{window[0]}, {window[1]}) |" if window else ""
    lines = [
        f"# {header['env']}: regret of {len(rows)} policies",
        "",
        f"- command: `{command}`",
        *(f"- {key}: `{json.dumps(value)}`" for key, value in header.items() if key != "env"),
        f"- machine: {machine_description()}",
        "- final regret: sum over steps of `info['regret']` (pseudo-regret), mean over seeds with a 95% t-interval;",
        "  time per step: median over seeds, measured while runs share the cores, so compare within a table only.",
        "",
        "| policy | mean final cumulative regret | 95% interval | mean reward | policy µs/step | env+policy µs/step |"
        + extra,
        "|---|---:|---:|---:|---:|---:|" + ("---:|" if window else ""),
    ]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {r['final_regret']:.1f} | [{r['ci_low']:.1f}, {r['ci_high']:.1f}] | "
            f"{r['mean_reward']:.4f} | {r['policy_us']:.1f} | {r['step_us']:.1f} |"
            + (f" {r['window_regret']:.1f} ± {r['window_half']:.1f} |" if window else "")
        )
    if has_quality(by_policy):
        lines += _quality_table(by_policy)
        if rank_against is not None:
            lines += _rank_agreement(by_policy, rank_against)
    with atomic_write(path) as fh:
        fh.write("\n".join(lines) + "\n")
    return rows


def _quality_table(by_policy: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The markdown lines of the policies ranked by final quality, each against ``uniform`` on the same seeds."""
    lines = [
        "",
        "## Ranked by final quality",
        "",
        "- final quality: `info['quality']` when the episode ends (held-out quality of the trained model), mean",
        "  over seeds with a 95% t-interval; vs uniform: paired difference on the same seeds, mean and 95%",
        "  t-interval (an interval that excludes 0 is a difference the seeds resolve).",
        "",
        "| rank | policy | mean final quality | 95% interval | vs uniform (paired) | 95% interval | mean reward |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for rank, r in enumerate(quality_rows(by_policy), 1):
        q, h, d, dh = r["final_quality"], r["quality_half"], r["vs_baseline"], r["vs_baseline_half"]
        lines.append(
            f"| {rank} | {r['policy']} | {q:.4f} | [{q - h:.4f}, {q + h:.4f}] | "
            + (f"{d:+.4f} | [{d - dh:+.4f}, {d + dh:+.4f}]" if math.isfinite(d) else "– | –")
            + f" | {r['mean_reward']:.4f} |"
        )
    return lines


def _rank_agreement(by_policy: dict[str, list[dict[str, Any]]], rank_against: str) -> list[str]:
    """The markdown lines of the Kendall tau between the ranking here and that of the CSV ``rank_against``, and of
    how well that one reproduces itself over split halves of its seeds."""
    ours = {r["policy"]: r["final_quality"] for r in quality_rows(by_policy)}
    their_seeds = final_quality_per_seed_from_csv(rank_against)
    theirs = {policy: float(np.mean(list(v.values()))) for policy, v in their_seeds.items()}
    shared = [name for name in ours if name in theirs]
    tau = kendall_tau([ours[n] for n in shared], [theirs[n] for n in shared])
    halves = split_half_taus({n: their_seeds[n] for n in shared})
    return [
        "",
        f"## Rank agreement with `{rank_against}`",
        "",
        f"Kendall tau-b between the mean final quality here and there, over the {len(shared)} policies both ran: "
        f"**{tau:.2f}** (1: the same ranking, 0: unrelated, -1: reversed).",
        "",
        f"How well the ranking there reproduces itself: Kendall tau-b between the rankings of two disjoint halves "
        f"of its seeds, over {len(halves)} splits: median **{np.median(halves):.2f}**, range "
        f"[{min(halves):.2f}, {max(halves):.2f}]. A ranking this noisy bounds the agreement any proxy can show.",
        "",
        "| policy | mean final quality here | there |",
        "|---|---:|---:|",
        *(f"| {n} | {ours[n]:.4f} | {theirs[n]:.4f} |" for n in shared),
    ]


#: At most this many series share a panel; more policies are spread over panels, each with ``uniform`` as reference
PANEL_SERIES = 6


def plot_title(env_id: str, seeds: int, steps: int) -> str:
    """A title in words: the environment, seeds and steps (the settings are in the markdown file beside it)."""
    name = env_id.split("/")[-1]
    return f"{name}: {seeds} seeds, {steps} {'rounds' if 'Training' in name else 'steps'} each"


def _panels(names: Sequence[str], reference: str = "uniform") -> list[list[str]]:
    """``names`` in groups of at most PANEL_SERIES; when they need several groups, ``reference`` is in each."""
    names = list(names)
    if len(names) <= PANEL_SERIES:
        return [names]
    others = [n for n in names if n != reference]
    size = PANEL_SERIES - (reference in names)
    groups = [others[i : i + size] for i in range(0, len(others), size)]
    return [[*group, reference] if reference in names else group for group in groups]


def _series_plot(path: Path, series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], title: str, xlabel: str,
                 ylabel: str, markers: bool = False) -> None:  # fmt: skip
    """Mean curves with 95% bands, at most PANEL_SERIES a panel, one colour per policy across panels, the legend
    beside each panel (outside the data); written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _panels(list(series))
    colors = {name: f"C{i % 10}" for i, name in enumerate(series)}
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 3.6 * len(groups)), squeeze=False, sharex=True, sharey=True)
    for ax, group in zip(axes[:, 0], groups):
        for name in group:
            x, mean, half = series[name]
            ax.plot(x, mean, label=name, lw=1.5, color=colors[name], marker="." if markers else None)
            if np.any(half > 0):
                ax.fill_between(x, mean - half, mean + half, color=colors[name], alpha=0.15, lw=0)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes[-1, 0].set_xlabel(xlabel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def write_plot(path: Path, by_policy: dict[str, list[dict[str, Any]]], title: str) -> bool:
    """Mean cumulative regret per policy (95% bands); nothing is written (False) where the env knows no regret."""
    series = {}
    for name, runs in by_policy.items():
        curves = np.cumsum(np.stack([run["regret"] for run in runs]), axis=1)
        if not np.isfinite(curves).any():
            continue
        mean, half = mean_ci(curves)
        series[name] = (np.arange(1, curves.shape[1] + 1), mean, half if len(runs) > 1 else np.zeros_like(mean))
    if not series:
        return False
    _series_plot(path, series, title, xlabel="step", ylabel="cumulative regret\n(mean, 95% band over seeds)")
    return True


def write_quality_plot(path: Path, by_policy: dict[str, list[dict[str, Any]]], title: str) -> None:
    """Mean quality over rounds per policy (95% bands), at the rounds where every seed was evaluated."""
    series = {}
    for name, runs in by_policy.items():
        curves = np.stack([run["quality"] for run in runs])
        evaluated = np.isfinite(curves).all(axis=0)
        mean, half = mean_ci(curves[:, evaluated])
        series[name] = (np.flatnonzero(evaluated), mean, half if len(runs) > 1 else np.zeros_like(mean))
    _series_plot(path, series, title, xlabel="round",
                 ylabel="held-out quality\n(mean, 95% band over seeds)", markers=True)  # fmt: skip


def read_csv(path: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """Runs per policy from a CSV this module wrote (``write_csv``), as ``run_benchmark`` returns them: ``seed``,
    ``reward``, ``regret`` and, where the CSV has it, ``quality`` (its index 0, the env's reset, is not in the CSV:
    NaN)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    rows: dict[tuple[str, str], list[list[str]]] = {}
    with opener(path, "rt", encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
        for line in fh:
            fields = line.strip().split(",")
            rows.setdefault((fields[0], fields[1]), []).append(fields)
    column = {name: i for i, name in enumerate(header)}
    by_policy: dict[str, list[dict[str, Any]]] = {}
    for (name, seed), fields in rows.items():
        fields.sort(key=lambda f: int(f[column["step"]]))
        run = {
            "policy": name,
            "seed": int(seed),
            "reward": np.array([float(f[column["reward"]]) for f in fields]),
            "regret": np.array([float(f[column["regret"]]) for f in fields]),
        }
        if "quality" in column:
            run["quality"] = np.array([math.nan] + [float(f[column["quality"]]) for f in fields])
        by_policy.setdefault(name, []).append(run)
    return by_policy


def replot(csv_path: str | os.PathLike[str], env_id: str) -> list[Path]:
    """Rewrite the PNGs of a committed run from its CSV (no runs); returns the files written."""
    by_policy = read_csv(csv_path)
    runs = next(iter(by_policy.values()))
    title = plot_title(env_id, len(runs), len(runs[0]["reward"]))
    stem = Path(str(csv_path).removesuffix(".gz").removesuffix(".csv"))
    written = []
    if write_plot(stem.with_name(stem.name + ".png"), by_policy, title):
        written.append(stem.with_name(stem.name + ".png"))
    if has_quality(by_policy):
        write_quality_plot(stem.with_name(stem.name + "_quality.png"), by_policy, title)
        written.append(stem.with_name(stem.name + "_quality.png"))
    return written
