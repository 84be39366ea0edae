"""Run bandit policies x seeds on any registered environment and write regret tables and curves.

    python -m envs.benchmark --env trl_lead/ClusterBandit-v0 --policies exp3s,ucb1 --seeds 20 --steps 2000 \\
        --env-kwargs '{"means": [0.1, 0.3, 0.5, 0.7, 0.9]}' --out benchmarks/results/NAME

writes ``NAME.csv`` (``NAME.csv.gz`` with ``--csv-gzip``; long format: policy, seed, step, reward, regret,
cumulative_regret), ``NAME.md`` (mean final cumulative regret with a 95% t-interval over seeds, mean reward,
time per step) and ``NAME.png`` (mean cumulative regret with 95% bands; none where the env knows no regret).
Works for any env whose ``step`` info carries ``regret`` (and optionally ``action_mask``, passed on to
``select``), as every ``trl_lead/`` env does.

Envs whose ``reset`` info carries ``quality`` (``ProxyTraining-v0``, ``LiveTraining-v0``: the held-out quality of
the model the episode trained) also get a ``quality`` column in the CSV (NaN on steps the env did not evaluate),
a table in ``NAME.md`` that ranks the policies by final quality (mean over seeds with a 95% t-interval, and the
paired difference against ``uniform`` on the same seeds with its 95% t-interval), and ``NAME_quality.png``
(quality over rounds per policy). Plots hold at most six policies a panel; ``--replot NAME.csv`` rewrites them
from a committed CSV without running anything.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import re
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium.envs.registration import load_env_creator

import envs  # noqa: F401  (registers the trl_lead/ environments, also in worker processes)
from envs.benchmark_report import (
    final_quality_from_csv,
    has_quality,
    plot_title,
    replot,
    runs_from_csv,
    write_csv,
    write_markdown,
    write_plot,
    write_quality_plot,
)
from trl_lead.policies import POLICIES, make_policy
from trl_lead.rewards import RewardNormalizer, give_rewards
from trl_lead.selection import round_distribution


def policy_seed(seed: int) -> int:
    """The policy's seed for run ``seed``: independent of the env's stream, which ``seed`` itself drives
    (``default_rng(s)`` and Gymnasium's ``np_random(s)`` would otherwise be the very same generator)."""
    return int(np.random.SeedSequence(seed, spawn_key=(1,)).generate_state(1)[0])


def _make_env(env_id: str, steps: int, env_kwargs: dict[str, Any]) -> gymnasium.Env:
    """``gymnasium.make``; an env taking ``max_steps`` gets ``steps`` unless the kwargs set it."""
    kwargs = dict(env_kwargs)
    if "max_steps" not in kwargs:
        creator = load_env_creator(gymnasium.spec(env_id).entry_point)
        try:
            accepts = "max_steps" in inspect.signature(creator).parameters
        except (TypeError, ValueError):
            accepts = False
        if accepts:
            kwargs["max_steps"] = steps
    return gymnasium.make(env_id, **kwargs)


def run_policy(
    env_id: str,
    policy_name: str,
    seed: int,
    steps: int,
    env_kwargs: dict[str, Any] | None = None,
    policy_kwargs: dict[str, Any] | None = None,
    normalize_rewards: bool = False,
) -> dict[str, Any]:
    """One policy on one seeded episode of ``steps`` steps.

    The env is reset with ``seed`` and the policy with :func:`policy_seed` (``seed``), so every policy
    meets the same reward draws for a given seed. Returns ``reward`` and ``regret`` arrays (per step),
    ``policy_us`` (``select`` + ``update`` per step) and ``step_us`` (the whole loop per step).

    On a round env (``ProxyTraining``, ``LiveTraining``: its step info names the arms ``rewarded``), the policy is
    driven as the trainer drives it: in mixture mode its action is ``round_distribution`` (its probabilities, or its
    batched round's shares), and each round's measured per-cluster rewards go to it through ``give_rewards`` (each
    normalised with ``normalize_rewards``; with the round's distribution in mixture mode).
    """
    env = _make_env(env_id, steps, env_kwargs or {})
    try:
        _, info = env.reset(seed=seed)
        policy = make_policy(policy_name, **(policy_kwargs or {}))
        mixture = isinstance(env.action_space, gymnasium.spaces.Box)
        policy.reset(env.action_space.shape[0] if mixture else int(env.action_space.n), seed=policy_seed(seed))
        normalize = RewardNormalizer() if normalize_rewards and not policy.normalizes_rewards else None
        rewards = np.empty(steps)
        regrets = np.empty(steps)
        quality = np.full(steps + 1, math.nan) if "quality" in info else None
        if quality is not None:
            quality[0] = info["quality"]
        mask = info.get("action_mask")
        policy_s = 0.0
        clock = time.perf_counter
        start = clock()
        for t in range(steps):
            t0 = clock()
            if mixture:
                arm = round_distribution(policy, mask, env.unwrapped.round_size)
            else:
                arm = policy.select(mask)
            t1 = clock()
            _, reward, terminated, truncated, info = env.step(arm)
            t2 = clock()
            if "rewarded" in info:  # a LEAD round: its measured rewards, as the trainer gives them
                measured = {int(a): info["cluster_rewards"][str(a)] for a in info["rewarded"]}
                give_rewards(policy, measured, arm if mixture else None, normalize, mixture)
            else:
                policy.update(arm, normalize(reward) if normalize else reward)
            policy_s += clock() - t2 + t1 - t0
            rewards[t] = reward
            regrets[t] = info["regret"]
            if quality is not None:
                quality[t + 1] = info.get("quality", math.nan)
            mask = info.get("action_mask")
            if (terminated or truncated) and t + 1 < steps:
                raise RuntimeError(
                    f"{env_id} ended after {t + 1} of {steps} steps; give it a longer episode in env_kwargs"
                )
        total_s = clock() - start
    finally:
        env.close()
    result = {
        "policy": policy_name,
        "seed": seed,
        "reward": rewards,
        "regret": regrets,
        "policy_us": policy_s / steps * 1e6,
        "step_us": total_s / steps * 1e6,
    }
    if quality is not None:
        result["quality"] = quality
    return result


def _run_task(task: tuple) -> dict[str, Any]:
    return run_policy(*task)


def run_benchmark(
    env_id: str,
    policies: Sequence[str],
    seeds: Sequence[int],
    steps: int,
    env_kwargs: dict[str, Any] | None = None,
    policy_kwargs: dict[str, dict[str, Any]] | None = None,
    normalize_rewards: bool = False,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Every policy on every seed, in up to ``workers`` (at most 2) processes. Results per policy, by seed."""
    policy_kwargs = policy_kwargs or {}
    policies = list(dict.fromkeys(policies))  # a name given twice would mix its runs
    unknown = [name for name in policies if name not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; valid names: {', '.join(POLICIES)}")
    tasks = [
        (env_id, name, seed, steps, env_kwargs or {}, policy_kwargs.get(name, {}), normalize_rewards)
        for name in policies
        for seed in seeds
    ]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc=f"{env_id}", unit="run", disable=not progress)
    results: list[dict[str, Any]] = []
    workers = max(1, min(2, workers))
    if workers == 1:
        for task in tasks:
            results.append(_run_task(task))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for future in as_completed([pool.submit(_run_task, task) for task in tasks]):
                results.append(future.result())
                bar.update()
    bar.close()
    by_policy: dict[str, list[dict[str, Any]]] = {name: [] for name in policies}
    for res in sorted(results, key=lambda r: r["seed"]):
        by_policy[res["policy"]].append(res)
    return by_policy


# --------------------------------------------------------------------------- CLI
#: The settings of ``trl-lead demo`` (``trl_lead.cli.DemoSettings``: the whole embedded pool, batches of 16, rounds of
#: 32, 25% budget, reuse up to 8, lr 1e-3, 100 optimizer steps = 50 rounds) as ``LiveTraining`` arguments, with the
#: held-out quality evaluated every 10 rounds for the quality curves.
LIVE_DEMO_KWARGS: dict[str, Any] = {
    "pool_size": 2000,
    "batch_size": 16,
    "round_size": 32,
    "budget": 0.25,
    "max_reuse": 8,
    "learning_rate": 1e-3,
    "eval_every": 10,
}
#: ``--env live``: which policy trains the best model, on real training at the demo's settings with the trainer's
#: default selection settings (``LiveTraining``'s ``preset="default"``), every policy, rewards normalised by their
#: running min/max as the trainer does (the preset's ``reward_scaling="minmax"``). Defaults of the preset; the
#: command line's ``--policies``, ``--seeds``, ``--steps`` and ``--env-kwargs`` (merged) win.
PRESETS: dict[str, dict[str, Any]] = {
    "live": {
        "env": "trl_lead/LiveTraining-v0",
        "env_kwargs": LIVE_DEMO_KWARGS,
        "policies": ",".join(POLICIES),
        "seeds": 20,
        "steps": 50,
        "normalize_rewards": True,
    }
}
_DEFAULTS = {"policies": ",".join(POLICIES), "seeds": 20, "steps": 1000}


def _parser() -> argparse.ArgumentParser:
    """The command line of ``python -m envs.benchmark``."""
    parser = argparse.ArgumentParser(prog="python -m envs.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--env",
        required=True,
        help="registered Gymnasium id, e.g. trl_lead/ClusterBandit-v0, or a preset: 'live' (LiveTraining-v0 at the "
        "demo's settings and the default selection preset, every policy x 20 seeds x 50 rounds)",
    )
    parser.add_argument("--policies", default=None, help="comma-separated make_policy names (default: all)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0 .. seeds-1; default 20)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default 1000)")
    parser.add_argument(
        "--env-kwargs", default="{}", help="JSON object passed to gymnasium.make, or @FILE holding one"
    )
    parser.add_argument("--policy-kwargs", default="{}", help='JSON object {"policy name": {kwargs}}')
    parser.add_argument(
        "--normalize-rewards", action="store_true", help="rescale rewards to [-1, 1] by running min/max (as LEAD)"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes (at most 2)")
    parser.add_argument("--out", default=None, help="output path prefix (default benchmarks/results/<env name>)")
    parser.add_argument(
        "--regret-window", default=None, help="A:B adds a column with the regret of steps [A, B), e.g. after a change"
    )
    parser.add_argument("--csv-gzip", action="store_true", help="write NAME.csv.gz instead of NAME.csv")
    parser.add_argument(
        "--rank-against",
        default=None,
        help="CSV of another benchmark with a quality column (e.g. the live one): add the Kendall tau between the "
        "two rankings by mean final quality",
    )
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument(
        "--combine",
        default=None,
        help="comma-separated CSVs of runs of this module (e.g. two halves of the seeds): write the tables and plots "
        "of all their runs together instead of running anything",
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--replot", default=None, help="CSV of a finished run: rewrite its PNGs only, no runs")
    return parser


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = _parser()
    args = parser.parse_args(argv)
    preset = PRESETS.get(args.env, {})
    for name, default in _DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, preset.get(name, default))
    env_id = preset.get("env", args.env)
    args.normalize_rewards = args.normalize_rewards or preset.get("normalize_rewards", False)
    if args.replot:
        for path in replot(args.replot, env_id):
            print(path)
        return []

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    given = Path(args.env_kwargs[1:]).read_text() if args.env_kwargs.startswith("@") else args.env_kwargs
    env_kwargs = {**preset.get("env_kwargs", {}), **json.loads(given)}
    policy_kwargs = json.loads(args.policy_kwargs)
    if args.seeds < 1 or args.steps < 1:
        parser.error("--seeds and --steps must be >= 1")
    window = None
    if args.regret_window:
        bounds = re.fullmatch(r"(\d+):(\d+)", args.regret_window)
        window = (int(bounds[1]), int(bounds[2])) if bounds else None
        if window is None or not window[0] < window[1] <= args.steps:
            parser.error(f"--regret-window must be A:B with 0 <= A < B <= --steps, got {args.regret_window!r}")
    if args.rank_against is not None:  # a bad file fails now, not after the runs
        final_quality_from_csv(args.rank_against)
    probe = _make_env(env_id, args.steps, env_kwargs)
    unmodeled = dict(getattr(probe.unwrapped, "unmodeled", {}))
    probe.close()
    out = Path(args.out or Path("benchmarks/results") / re.sub(r"[^A-Za-z0-9_.-]+", "_", env_id))
    started = time.perf_counter()
    if args.combine:
        by_policy = _combined_runs(args.combine.split(","), policies)
        args.seeds = len({run["seed"] for runs in by_policy.values() for run in runs})
        wall_time = f"combined from {args.combine}"
    else:
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        by_policy = run_benchmark(
            env_id, policies, seeds, args.steps, env_kwargs, policy_kwargs, normalize_rewards=args.normalize_rewards,
            workers=args.workers, progress=not args.no_progress,
        )  # fmt: skip
        wall_time = f"{time.perf_counter() - started:.0f} s with {max(1, min(2, args.workers))} worker(s)"
    header = {
        "env": env_id,
        "env_kwargs": env_kwargs,
        "policy_kwargs": policy_kwargs,
        "seeds": args.seeds,
        "steps": args.steps,
        "normalize_rewards": args.normalize_rewards,
        # the settings the env cannot model (`ProxyTraining.unmodeled`), each with why
        **({"unmodeled": unmodeled} if unmodeled else {}),
        "wall_time": wall_time,
    }
    command = "python -m envs.benchmark " + shlex.join(argv if argv is not None else sys.argv[1:])
    title = plot_title(env_id, args.seeds, args.steps)
    return _write_outputs(out, by_policy, header, command, title, window, args.rank_against, args.csv_gzip)


def _combined_runs(paths: Sequence[str], policies: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The runs of ``policies`` in the CSVs ``paths`` of earlier runs (e.g. two halves of the seeds), by seed."""
    by_policy: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        for name, runs in runs_from_csv(path).items():
            by_policy.setdefault(name, []).extend(runs)
    return {name: sorted(by_policy[name], key=lambda run: run["seed"]) for name in policies if name in by_policy}


def _write_outputs(
    out: Path,
    by_policy: dict[str, list[dict[str, Any]]],
    header: dict[str, Any],
    command: str,
    title: str,
    window: tuple[int, int] | None,
    rank_against: str | None,
    csv_gzip: bool,
) -> list[dict[str, Any]]:
    """``NAME.csv``, ``NAME.md``, the plots; prints the table and returns its rows."""
    write_csv(out.with_name(out.name + (".csv.gz" if csv_gzip else ".csv")), by_policy)
    rows = write_markdown(out.with_name(out.name + ".md"), by_policy, header, command, window, rank_against)
    write_plot(out.with_name(out.name + ".png"), by_policy, title)
    if has_quality(by_policy):
        write_quality_plot(out.with_name(out.name + "_quality.png"), by_policy, title)
    print(Path(out.with_name(out.name + ".md")).read_text())
    return rows


if __name__ == "__main__":
    main()
