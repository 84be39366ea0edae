"""How close is the calibrated ProxyTraining surrogate to real LEAD training? Real runs, calibration, replay.

    python benchmarks/proxy_calibration.py [--steps 120] [--runs exp3s:0,uniform:1,exp3s:2] [--work-dir DIR]

1. Real short LEAD trainings on the embedded default (``trl_lead.cli._train_lead``: the demo's settings, tiny
   warmed-up Llama, 2000-sample pool, ``lead_cluster_column="family_id"``, fp32 on the CPU), one per ``policy:seed``
   in ``--runs``; each writes its ``lead_rounds.jsonl``.
2. ``ProxyTraining.from_rounds`` on all runs but the last (the last is held out).
3. Each run's cluster sequence is replayed in the calibrated proxy (and, for reference, in the uncalibrated default
   proxy): same cluster each round, the proxy's own fine selection, averaged over ``--replay-seeds`` seeds.
4. ``benchmarks/results/proxy_calibration.md`` (+ ``.json``): per-cluster mean reward real vs proxy, correlation and
   mean absolute error of per-round rewards, next to a constant predictor (the calibration runs' mean reward).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from envs.calibration import _FIT_GRIDS  # noqa: E402
from envs.proxy_training import ProxyTraining  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
GAPS = (("first visit", 0, 0), ("1", 1, 1), ("2-3", 2, 3), ("4-8", 4, 8), ("9+", 9, 10**9))


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{platform.platform()}, Python {platform.python_version()}, {cores} cores ({cpu}){load}"


def real_run(base: Any, policy: str, seed: int, steps: int, out_dir: Path, reuse: bool) -> tuple[Path, float]:
    """One real LEAD training (the demo's settings); returns its rounds file and the seconds it took."""
    rounds = out_dir / "lead_rounds.jsonl"
    if reuse and rounds.exists():
        return rounds, math.nan
    from trl_lead.cli import PAPER_CHOICES, DemoSettings, _train_lead
    from trl_lead.embedded import torch_threads

    if rounds.exists():
        rounds.unlink()  # the trainer appends
    start = time.perf_counter()
    # Pinned to the settings the committed results were measured with (the demo's later defaults differ)
    settings = DemoSettings(max_steps=steps, seed=seed, learning_rate=2e-3, max_reuse=4)
    with torch_threads(1):  # the tiny model is fastest on one thread, also on a busy machine
        _train_lead(base, settings, str(out_dir), **{**PAPER_CHOICES, "lead_policy": policy})
    return rounds, time.perf_counter() - start


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def replay(env: ProxyTraining, records: list[dict[str, Any]], seed: int) -> dict[str, np.ndarray]:
    """The recorded cluster sequence in the proxy; a cluster the proxy has run dry of is swapped for an allowed one."""
    obs, info = env.reset(seed=seed)
    rewards, expected, swapped = [], [], 0
    for record in records:
        arm = int(record["cluster"])
        if not info["action_mask"][arm]:
            arm, swapped = int(np.flatnonzero(info["action_mask"])[0]), swapped + 1
        obs, reward, terminated, truncated, info = env.step(arm)
        rewards.append(reward)
        expected.append(info["expected_rewards"][arm])
        if terminated:
            break
    n = len(rewards)
    pad = [math.nan] * (len(records) - n)
    return {"reward": np.array(rewards + pad), "expected": np.array(expected + pad), "swapped": swapped}


def compare(records: list[dict[str, Any]], env: ProxyTraining, seeds: int, constant: float) -> dict[str, Any]:
    real = np.array([r["reward"] for r in records])
    clusters = np.array([r["cluster"] for r in records])
    runs = [replay(env, records, seed) for seed in range(seeds)]
    proxy = np.nanmean([run["reward"] for run in runs], axis=0)
    expected = runs[0]["expected"]
    ok = np.isfinite(proxy)

    def stats(pred: np.ndarray) -> dict[str, float]:
        m = ok & np.isfinite(pred)
        return {"corr": float(np.corrcoef(real[m], pred[m])[0, 1]), "mae": float(np.abs(real[m] - pred[m]).mean())}

    since = []  # rounds since the cluster's previous visit (0: first visit)
    last: dict[int, int] = {}
    for r, c in enumerate(clusters.tolist()):
        since.append(r - last[c] if c in last else 0)
        last[c] = r
    since = np.array(since)
    by_gap = {}
    for label, low, high in GAPS:
        m = (since >= low) & (since <= high)
        by_gap[label] = {
            "rounds": int(m.sum()),
            "real": float(real[m].mean()) if m.any() else math.nan,
            "proxy": float(np.nanmean(proxy[m])) if m.any() else math.nan,
        }
    k = env.num_clusters
    per_cluster = [
        {
            "visits": int((clusters == c).sum()),
            "real": float(real[clusters == c].mean()) if (clusters == c).any() else math.nan,
            "proxy": float(np.nanmean(proxy[clusters == c])) if (clusters == c).any() else math.nan,
        }
        for c in range(k)
    ]
    return {
        "rounds": len(records),
        "noisy_mean": stats(proxy),
        "noise_free": stats(expected),
        "single_seed_mae": float(np.nanmean([np.nanmean(np.abs(real - run["reward"])) for run in runs])),
        "constant_mae": float(np.abs(real - constant).mean()),
        "swapped": int(sum(run["swapped"] for run in runs)),
        "per_cluster": per_cluster,
        "by_gap": by_gap,
        "real_mean": float(real.mean()),
        "proxy_mean": float(np.nanmean(proxy)),
    }


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    families = result["families"]
    lines = [
        "# ProxyTraining calibrated on real LEAD runs (embedded default)",
        "",
        f"Machine: {result['machine']}. torch {result['torch']}, trl {result['trl']}.",
        "",
        f"Real runs: `trl_lead.cli._train_lead` ({result['steps']} optimizer steps = {result['steps'] // 2} rounds "
        "of 32 samples, batch 16, lr 2e-3 constant, reuse cap 4, budget 25% of the 2000-sample pool, the paper's "
        "choices: single-cluster rounds, top-IDU, `idu_drop` reward, gradient correction, initial scores), "
        "K = 8 clusters = the embedded families (`family_id`). Reproduce with "
        "`python benchmarks/proxy_calibration.py`.",
        "",
        "| run | policy | seed | rounds | training time (s) | role |",
        "|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        seconds = "reused" if math.isnan(run["seconds"]) else f"{run['seconds']:.0f}"
        lines.append(
            f"| {run['name']} | {run['policy']} | {run['seed']} | {run['rounds']} | {seconds} | {run['role']} |"
        )
    cal = result["calibration"]
    fitted = cal["fitted"]
    lines += [
        "",
        f"`ProxyTraining.from_rounds` on the calibration runs: {cal['fit_seconds']:.1f} s ({cal['replays']} "
        f"teacher-forced replays). Fitted eta = {fitted['eta']:.3f} (from {cal['eta_from']} records), "
        f"same-cluster cosine = {fitted['same_cluster_cosine']:.3f} (from {cal['cosine_from']} records), shared "
        f"forgetting = {fitted['forgetting'][0]:g} per sample, memorisation = {fitted['memorization'][0]:g}, "
        f"batch size {fitted['batch_size']}, budget {fitted['budget']}.",
        "",
        "| cluster | size | initial loss | floor | skill rate (/sample) | drift level | R^2 of drops | visits |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c, name in enumerate(families):
        lines.append(
            f"| {name} | {fitted['sizes'][c]} | {fitted['initial_loss'][c]:.3f} | {fitted['floor'][c]:.3f} | "
            f"{fitted['skill_rate'][c]:.4f} | {fitted['drift_level'][c]:g} | {cal['r2_of_drops'][c]:.2f} | "
            f"{cal['visits'][c]} |"
        )
    lines += [
        "",
        'R^2 of drops: how much of the variance of the recorded per-round loss drops `correction[k]["d"]` the '
        "teacher-forced replay (same sample ids) explains, in-sample.",
        "",
        "## Replaying each run's cluster sequence",
        "",
        f"Per-round rewards, real vs proxy (proxy: mean over {result['replay_seeds']} seeds of its observation "
        "noise; noise-free: the proxy's expected reward of the chosen arm). Constant: predicting every round by "
        "the calibration runs' mean reward.",
        "",
        "| run | proxy | corr | MAE | corr (noise-free) | MAE (noise-free) | MAE one seed | MAE constant |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        for label in ("calibrated", "default"):
            cmp = run[label]
            lines.append(
                f"| {run['name']} ({run['role']}) | {label} | {cmp['noisy_mean']['corr']:.2f} | "
                f"{cmp['noisy_mean']['mae']:.3f} | {cmp['noise_free']['corr']:.2f} | {cmp['noise_free']['mae']:.3f} "
                f"| {cmp['single_seed_mae']:.3f} | {cmp['constant_mae']:.3f} |"
            )
    lines += ["", "Per-cluster mean reward, real / calibrated proxy (visits):", ""]
    lines.append("| cluster | " + " | ".join(f"{run['name']} ({run['role']})" for run in result["runs"]) + " |")
    lines.append("|---|" + "---|" * len(result["runs"]))
    for c, name in enumerate(families):
        cells = []
        for run in result["runs"]:
            pc = run["calibrated"]["per_cluster"][c]
            cells.append(f"{pc['real']:+.3f} / {pc['proxy']:+.3f} ({pc['visits']})" if pc["visits"] else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Mean reward by rounds since the cluster's previous visit, real / calibrated proxy (rounds), all runs:",
        "",
        "| since previous visit | " + " | ".join(f"{run['name']} ({run['role']})" for run in result["runs"]) + " |",
        "|---|" + "---|" * len(result["runs"]),
    ]
    for label, _, _ in GAPS:
        cells = []
        for run in result["runs"]:
            gap = run["calibrated"]["by_gap"][label]
            cells.append(f"{gap['real']:+.3f} / {gap['proxy']:+.3f} ({gap['rounds']})" if gap["rounds"] else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Reading", "", *result["reading"], ""]
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".md")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def reading(result: dict[str, Any]) -> list[str]:
    """A plain summary of the numbers (written from them, so it stays true when the benchmark is rerun)."""
    held = [run for run in result["runs"] if run["role"] == "held out"]
    fit = [run for run in result["runs"] if run["role"] == "calibration"]
    out = []
    for group, label in ((fit, "calibration runs (in-sample)"), (held, "held-out run")):
        if not group:
            continue
        corr = np.mean([r["calibrated"]["noisy_mean"]["corr"] for r in group])
        mae = np.mean([r["calibrated"]["noisy_mean"]["mae"] for r in group])
        const = np.mean([r["calibrated"]["constant_mae"] for r in group])
        default = np.mean([r["default"]["noisy_mean"]["corr"] for r in group])
        default_mae = np.mean([r["default"]["noisy_mean"]["mae"] for r in group])
        signs = [
            np.sign(pc["real"]) == np.sign(pc["proxy"])
            for r in group
            for pc in r["calibrated"]["per_cluster"]
            if pc["visits"] >= 3 and abs(pc["real"]) > 0.05
        ]
        verdict = "better than" if mae < const else "no better than"
        out.append(
            f"- {label}: per-round correlation {corr:.2f}, MAE {mae:.3f} (uncalibrated default proxy: {default:.2f}, "
            f"{default_mae:.3f}); {verdict} the constant predictor's MAE {const:.3f}; the sign of the per-cluster "
            f"mean reward agrees for {int(np.sum(signs))} of {len(signs)} clusters visited 3+ times with "
            "|mean| > 0.05."
        )
    for run in held:
        cal, default = run["calibrated"]["noisy_mean"], run["default"]["noisy_mean"]
        if cal["mae"] >= default["mae"]:
            out.append(
                f"- On the held-out run the calibration does not help: the uncalibrated default proxy (hand-set "
                f"parameters) does as well or better (MAE {default['mae']:.3f} vs {cal['mae']:.3f}, correlation "
                f"{default['corr']:.2f} vs {cal['corr']:.2f}). Two 60-round runs give each cluster ~20 noisy visits; "
                "the fit explains part of them (R^2 above) but much of that does not carry over to another run."
            )
    edge = [
        name
        for name, level in zip(result["families"], result["calibration"]["fitted"]["drift_level"])
        if level <= min(_FIT_GRIDS["drift_level"])
    ]
    runs = result["runs"]
    soon = [r["calibrated"]["by_gap"]["1"] for r in runs if r["calibrated"]["by_gap"]["1"]["rounds"]]
    late = [r["calibrated"]["by_gap"]["9+"] for r in runs if r["calibrated"]["by_gap"]["9+"]["rounds"]]
    if soon and late:
        out.append(
            "- Both real and proxy rewards depend on how long a cluster was left alone: a cluster revisited the "
            f"round after its last visit gives {np.mean([g['real'] for g in soon]):+.3f} real / "
            f"{np.mean([g['proxy'] for g in soon]):+.3f} proxy on average, one left alone for 9+ rounds "
            f"{np.mean([g['real'] for g in late]):+.3f} / {np.mean([g['proxy'] for g in late]):+.3f} (training "
            "other clusters in single-cluster rounds at lr 2e-3 raises this small model's loss on the rest; the "
            "proxy models it as drift)."
        )
    out.append(
        "- Round-to-round variation of the real rewards is large and only partly reproduced; the proxy models no "
        "per-sample effects beyond a log-normal spread and persistent observation noise (e.g. not the corrupted "
        "answers that top-IDU selection may pick first), nor the optimizer's state. Use it to compare settings "
        "and policies cheaply and qualitatively, then confirm with `LiveTraining` or real runs; its per-round "
        "numbers are not predictions."
    )
    if edge:
        out.append(
            f"- The fitted drift level sits at the edge of its grid ({min(_FIT_GRIDS['drift_level'])}) for "
            f"{', '.join(edge)}: these runs' loss rises may be larger than the grid allows; the grid is "
            "`envs.calibration._FIT_GRIDS`."
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps per real run (2 per round)")
    parser.add_argument("--runs", default="exp3s:0,uniform:1,exp3s:2", help="policy:seed,...; the last is held out")
    parser.add_argument("--replay-seeds", type=int, default=5)
    parser.add_argument("--work-dir", default=None, help="where the real runs write (default: a temp dir)")
    parser.add_argument("--reuse", action="store_true", help="reuse runs already in --work-dir")
    parser.add_argument("--out", default=str(RESULTS / "proxy_calibration"))
    options = parser.parse_args(argv)

    import torch
    import transformers
    from trl import __version__ as trl_version

    from trl_lead.embedded import FAMILIES, load_embedded_default

    transformers.logging.set_verbosity_error()
    work = Path(options.work_dir or tempfile.mkdtemp(prefix="proxy_calibration_"))
    base = load_embedded_default()
    labels = np.asarray(base.train_dataset["family_id"])
    specs = [(p.split(":")[0], int(p.split(":")[1])) for p in options.runs.split(",")]
    runs = []
    for i, (policy, seed) in enumerate(specs):
        name = f"run{i}"
        print(f"[real] {name}: {policy}, seed {seed}, {options.steps} steps", flush=True)
        path, seconds = real_run(base, policy, seed, options.steps, work / name, options.reuse)
        role = "held out" if i == len(specs) - 1 and len(specs) > 1 else "calibration"
        runs.append({"name": name, "policy": policy, "seed": seed, "path": path, "seconds": seconds, "role": role})

    calibration_paths = [run["path"] for run in runs if run["role"] == "calibration"]
    start = time.perf_counter()
    proxy = ProxyTraining.from_rounds(calibration_paths, clusters=labels, cluster_names=list(FAMILIES))
    fit_seconds = time.perf_counter() - start
    print(f"[calibrated] in {fit_seconds:.1f} s", flush=True)
    constant = float(np.mean([r["reward"] for p in calibration_paths for r in read(p)]))
    for run in runs:
        records = [r for r in read(run["path"]) if not r.get("warmup")]
        run["rounds"] = len(records)
        proxy.max_rounds = len(records)
        default = ProxyTraining(max_rounds=len(records), sizes=proxy.sizes.tolist(), budget=proxy.settings.budget)
        run["calibrated"] = compare(records, proxy, options.replay_seeds, constant)
        run["default"] = compare(records, default, options.replay_seeds, constant)
        run["path"] = str(run["path"])
        print(f"[replay] {run['name']}: {json.dumps(run['calibrated']['noisy_mean'])}", flush=True)

    result = {
        "machine": machine(),
        "torch": torch.__version__,
        "trl": trl_version,
        "steps": options.steps,
        "replay_seeds": options.replay_seeds,
        "families": list(FAMILIES),
        "runs": runs,
        "calibration": {**proxy.calibration, "fit_seconds": fit_seconds},
    }
    result["reading"] = reading(result)
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(out.with_suffix(".md"), result)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"wrote {out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
