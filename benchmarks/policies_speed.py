"""Time per step of every policy (select + update, K = 64) and of a ClusterBandit-v0 step.

    python benchmarks/policies_speed.py [--steps 1000] [--repeats 41] [--out benchmarks/results/policies_speed.md]

Targets: select + update under 20 µs per step at K = 64 for every policy; a ClusterBandit step
under 50 µs. Every configuration is timed in ``--repeats`` loops of ``--steps`` steps, round-robin (one loop of
each configuration, then the next round), so bursts of other work on a shared machine hit all configurations
alike. Targets are judged on the best loop, as ``timeit`` advises (slower loops measure the other processes);
the median and the load average are reported next to it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium
import numpy as np

import envs  # noqa: F401  (registers the environments)
from envs.benchmark_report import machine_description
from envs.policies import POLICIES, make_policy
from trl_lead.files import atomic_write

POLICY_TARGET_US = 20.0
ENV_TARGET_US = 50.0


def policy_body(name: str, k: int, steps: int, masked: bool) -> Callable[[int], None]:
    """One select + update; the mask (if any) allows a fixed random half of the arms."""
    policy = make_policy(name)
    policy.reset(k, seed=0)
    rewards = np.random.default_rng(0).random(steps).tolist()
    mask = np.random.default_rng(1).random(k) < 0.5 if masked else None
    if mask is not None:
        mask[0] = True
    select, update = policy.select, policy.update

    def body(i: int) -> None:
        update(select(mask), rewards[i])

    return body


def env_body(k: int, raw: bool, **kwargs) -> Callable[[int], None]:
    env = gymnasium.make("trl_lead/ClusterBandit-v0", num_arms=k, max_steps=10**9, **kwargs)
    env.reset(seed=0)
    step = env.unwrapped.step if raw else env.step

    def body(i: int) -> None:
        step(i % k)

    return body


def time_round_robin(
    bodies: dict[str, Callable[[int], None]], steps: int, repeats: int
) -> dict[str, tuple[float, float, float]]:
    """Per configuration: (median wall-clock, best wall-clock, median CPU time) in µs per call."""
    for body in bodies.values():  # warm-up
        for i in range(steps):
            body(i)
    wall: dict[str, list[float]] = {key: [] for key in bodies}
    cpu: dict[str, list[float]] = {key: [] for key in bodies}
    for _ in range(repeats):
        for key, body in bodies.items():
            start, start_cpu = time.perf_counter_ns(), time.process_time_ns()
            for i in range(steps):
                body(i)
            cpu[key].append((time.process_time_ns() - start_cpu) / steps / 1000.0)
            wall[key].append((time.perf_counter_ns() - start) / steps / 1000.0)
    return {key: (statistics.median(wall[key]), min(wall[key]), statistics.median(cpu[key])) for key in bodies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--arms", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results/policies_speed.md")
    args = parser.parse_args()
    k = args.arms
    load = os.getloadavg()

    policy_bodies = {
        (name, masked): policy_body(name, k, args.steps, masked) for name in POLICIES for masked in (False, True)
    }
    env_settings = {
        "bernoulli, stationary": {},
        "gaussian, stationary": {"reward_law": "gaussian"},
        "bernoulli, sinusoidal drift": {"drift": "sinusoidal"},
        "bernoulli, change points": {"change_points": list(range(1000, 10**6, 1000))},
    }
    env_bodies = {
        (label, arms, raw): env_body(arms, raw, **kwargs)
        for label, kwargs in env_settings.items()
        for arms in (5, k)
        for raw in (True, False)
    }
    times = time_round_robin({**policy_bodies, **env_bodies}, args.steps, args.repeats)
    end_load = os.getloadavg()

    lines = [
        "# Speed of the bandit policies and of ClusterBandit-v0",
        "",
        f"- machine: {machine_description()}",
        f"- load average (1, 5, 15 min) at start: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f};"
        f" at end: {end_load[0]:.2f}, {end_load[1]:.2f}, {end_load[2]:.2f} (other jobs were running)",
        f"- method: `python benchmarks/policies_speed.py --steps {args.steps} --repeats {args.repeats} --arms {k}`:"
        f" {args.repeats} rounds, each timing one loop of {args.steps} steps of every configuration in turn, after a"
        " warm-up loop, one process. Reported: median and best wall-clock time per step, and the median CPU time"
        " of the process (leaves out waiting for a core, not a busy sibling hyperthread).",
        f"- policy step = `select(mask)` + `update(arm, reward)` at K = {k}, rewards uniform in [0, 1];"
        " the masked columns allow a fixed random half of the arms.",
        "",
        f"## Policies (target < {POLICY_TARGET_US:.0f} µs per step)",
        "",
        "| policy | wall µs/step median | best | CPU median | masked: wall median | best | CPU median |"
        " meets target (best) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    misses = []
    for name in POLICIES:
        plain, masked = times[(name, False)], times[(name, True)]
        ok = max(plain[1], masked[1]) < POLICY_TARGET_US
        if not ok:
            misses.append(name)
        cells = " | ".join(f"{x:.2f}" for x in (*plain, *masked))
        lines.append(f"| {name} | {cells} | {'yes' if ok else 'NO'} |")
    lines += [
        "",
        f"## ClusterBandit-v0 step (target < {ENV_TARGET_US:.0f} µs)",
        "",
        "`raw` calls `env.unwrapped.step`; `make` goes through the wrappers `gymnasium.make` adds "
        "(order enforcing, passive checker).",
        "",
        "| setting | K | raw: wall µs/step median | best | CPU median | make: wall median | best | CPU median |"
        " meets target (best) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label in env_settings:
        for arms in (5, k):
            raw, made = times[(label, arms, True)], times[(label, arms, False)]
            ok = made[1] < ENV_TARGET_US
            if not ok:
                misses.append(f"env {label} K={arms}")
            cells = " | ".join(f"{x:.2f}" for x in (*raw, *made))
            lines.append(f"| {label} | {arms} | {cells} | {'yes' if ok else 'NO'} |")
    lines += ["", "Targets missed (best loop, wall-clock): " + (", ".join(misses) if misses else "none") + "."]
    out = Path(args.out)
    with atomic_write(out) as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
