"""Can a selector gain anything? Methods against random, stratified and an oracle on pools whose noise conflicts.

The embedded default pool leaves almost no room between a random subset and a noise-free one (docs/results.md), so
this benchmark uses the :data:`trl_lead.pool.MIXTURES`, where wrong answers to a task's own prompts and a bad source
of the same prompts cost the model something. The mixtures:

- (a) ``conflict-a`` with its family clusters (``lead_cluster_column="family_id"``; the bad source its own cluster),
- (b) the same pool with the clusters LEAD computes itself (no cluster column: the ``lead_clusters`` default),
- (c) ``conflict-c``: other family sizes, another wrong-answer rate, a larger unlearnable share,
- (d) ``near-miss-d``: wrong answers that are near misses in each task's own format, a bad source of one task's
  prompts, and a base model warmed up on this noisy pool itself (where the base's loss cannot tell right from wrong).

Every run starts from the same warmed-up base model and trains the same number of optimizer steps on at most
``budget`` distinct samples (the runner and the methods are those of ``benchmarks/selection.py``); the oracle draws
its subset at random from the clean rows only. Exact match is measured on 200 held-out items per family (120 for
``lookup``). Each method's difference to random and to stratified is paired by seed (same base model, same held-out
set, same seed of the subset draw and the data order) with a 95% t-interval, and its share of the random-to-oracle
gap is ``mean(method - random) / mean(oracle - random)``.

    python benchmarks/selection_mixtures.py                    # the defaults' grid (resumable: finished rows kept)
    python benchmarks/selection_mixtures.py --methods oracle,random --mixtures a --budgets 0.25 --seeds 1 \\
        --steps 100,200,400                                     # how many steps saturate the model on clean data

Writes benchmarks/results/selection_mixtures.csv (one row per run, appended as runs finish),
selection_mixtures.md (the paired tables) and selection_mixtures.png (paired differences to random).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from selection import METHODS, RESULTS, Job, append_row, read_rows, run_job  # noqa: E402

from trl_lead.pool import MIXTURE_NUM_EVAL_PER_FAMILY  # noqa: E402

#: The mixtures: (pool preset, clusters); "default" is the embedded default pool, for comparison
MIXTURES: dict[str, tuple[str | None, str]] = {
    "a": ("conflict-a", "family"),
    "b": ("conflict-a", "computed"),
    "c": ("conflict-c", "family"),
    "d": ("near-miss-d", "family"),
    "default": (None, "family"),
}
BASELINES = ("random", "stratified", "oracle", "oracle_clusters")
NAME = "selection_mixtures"
BATCH_SIZE = 16
POOL_SIZE = 2000  # the embedded default's num_train, which the presets keep
# The goal set for the default: >= 2 points over random and stratified, paired interval above 0, half the gap
GOAL_POINTS, GOAL_SHARE = 2.0, 0.5
#: Paired contrasts reported where both methods ran (same mixture, budget, steps and seeds): (method, reference, what)
CONTRASTS: tuple[tuple[str, str, str], ...] = (
    ("lead_auto_uniform", "lead_auto", "uniform policy instead of EXP3-S"),
    ("lead_auto_boltzmann", "lead_auto", "Boltzmann policy instead of EXP3-S"),
    ("lead_auto_revisits", "lead_auto", "revisit rules on: trained samples left out by their loss trajectory"),
    ("lead_auto_idu_drop", "lead_auto", "idu_drop reward, measured on revisits too"),
    ("lead_auto_blend", "lead_auto", "blend reward: the loss drop since the first visit once the budget is spent"),
    ("lead_auto_gain", "lead_auto", "heldout_gain reward (EXP3-S)"),
    ("lead_auto_gain_boltzmann", "lead_auto", "heldout_gain reward, Boltzmann policy"),
    ("lead_auto_gain_boltzmann_floor", "lead_auto", "heldout_gain reward, Boltzmann policy, floor 0.6"),
    ("small_loss_prompts_subset", "lead_auto", "static small-loss subset (prompt groups, keep 0.5), no LEAD"),
    ("lead_small_loss", "lead_auto", "small-loss filter within clusters, keep 0.5, revisit rules on"),
    ("lead_prompt_sized_noz", "lead_auto", "keep 0.5 instead of the budget's keep"),
    ("lead_prompt_sized_noz_keep25", "lead_auto", "keep 0.25 instead of the budget's keep"),
    ("lead_prompt_sized", "lead_prompt_sized_noz", "revisit rules on (keep 0.5)"),
    ("lead_prompt_sized_uniform_noz", "lead_prompt_sized_noz", "uniform policy (keep 0.5)"),
    ("lead_prompt_filter", "lead_small_loss", "prompt groups instead of clusters (no size split)"),
    ("lead_prompt_sized", "lead_prompt_filter", "size split on (prompt groups)"),
    ("lead_prompt_paced", "lead_prompt_filter", "budget pace 0.5 (prompt groups)"),
    ("lead_default", "lead_small_loss", "no filter instead of the small-loss filter within clusters"),
    ("lead_paced", "lead_small_loss", "budget pace 0.5"),
    ("lead_paced_full", "lead_small_loss", "budget pace 1.0"),
    ("lead_paced_uniform", "lead_small_loss", "budget pace 0.5, uniform policy"),
    ("lead_paced_no_filter", "lead_small_loss", "budget pace 0.5, no filter"),
    ("lead_small_loss_uniform", "lead_small_loss", "uniform policy instead of EXP3-S"),
    ("lead_small_loss_keep30", "lead_small_loss", "keep 0.3 instead of 0.5"),
    ("small_loss_subset", "lead_small_loss", "static small-loss subset (families), no LEAD"),
    ("lead_filter", "lead_default", "loss_z filter"),
    ("lead_boltzmann", "lead_default", "Boltzmann policy instead of EXP3-S"),
    ("lead_blend", "lead_default", "blend reward"),
    ("lead_quantile", "lead_default", "quantile reward scaling"),
    ("lead_combined", "lead_default", "loss_z filter, Boltzmann, blend reward and quantile scaling together"),
)
#: The plot's series, at most PLOT_SERIES of them, in this order where present (then the rest, in METHODS order)
PLOT_SERIES = 6
PLOT_ORDER = ("oracle", "stratified", "lead_auto", "small_loss_prompts_subset", "lead_small_loss", "lead_default")
PLOT_LABELS = {
    "oracle": "oracle: clean rows only",
    "oracle_clusters": "oracle clusters: no noise or bad-source cluster",
    "stratified": "stratified: equal share per family",
    "lead_auto": "LEAD, LEADConfig defaults",
    "small_loss_prompts_subset": "static small-loss subset (prompt groups)",
    "small_loss_subset": "static small-loss subset (families)",
    "lead_small_loss": "LEAD, small-loss filter within clusters",
    "lead_default": "LEAD without a filter",
    "lead_paced": "LEAD, filter within clusters, budget paced",
    "lead_auto_uniform": "LEAD defaults, uniform policy",
    "lead_auto_nofilter": "LEAD defaults without the filter",
}


def describe_machine() -> str:
    """CPU model, cores, memory and OS of this machine (no GPU is used)."""
    cpu, memory = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
        with open("/proc/meminfo") as f:
            kib = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{memory}, {platform.platform()}, CPU only, shared with other jobs"


def t95(n: int) -> float:
    """Two-sided 95% quantile of Student's t with n - 1 degrees of freedom (n >= 2)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
    return table.get(n - 1, 1.96 + 2.4 / max(n - 1, 1))


def paired(values: dict[int, float], reference: dict[int, float]) -> tuple[float, float, float, int]:
    """Mean of ``values[s] - reference[s]`` over the seeds both have, its 95% t-interval, and the number of seeds."""
    seeds = sorted(set(values) & set(reference))
    diffs = np.array([values[s] - reference[s] for s in seeds])
    if len(diffs) < 2:
        mean = float(diffs.mean()) if len(diffs) else math.nan
        return mean, math.nan, math.nan, len(diffs)
    half = t95(len(diffs)) * diffs.std(ddof=1) / math.sqrt(len(diffs))
    return float(diffs.mean()), float(diffs.mean() - half), float(diffs.mean() + half), len(diffs)


def _interval(mean: float, low: float, high: float, n: int) -> str:
    if math.isnan(mean):
        return ""
    if math.isnan(low):
        return f"{mean:+.1f} (n={n})"
    return f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]"


def summarize(rows: list[dict], out_dir: str, machine: str) -> None:
    """selection_mixtures.md and .png from the CSV rows (atomic writes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # score[(mixture, steps, budget)][method][seed]
    score: dict[tuple[str, int, float], dict[str, dict[int, float]]] = {}
    for row in rows:
        key = (row["mixture"], int(row["steps"]), float(row["budget"]))
        score.setdefault(key, {}).setdefault(row["method"], {})[int(row["seed"])] = float(row["overall_learnable"])
    lines = [
        "# Selection on mixtures with headroom",
        "",
        f"Machine: {machine}. Held-out exact match (%) over the learnable families, "
        f"{MIXTURE_NUM_EVAL_PER_FAMILY} items per family (120 for lookup). Every run: the same warmed-up base, the "
        "same optimizer steps (batch 16, constant LR 1e-3), at most `budget` distinct samples. Differences are paired "
        "by seed, mean [95% t-interval]; *gap share* = mean(method - random) / mean(oracle - random). *goal*: the bar "
        f"set for the default (>= {GOAL_POINTS:g} points over random and over stratified, both intervals > 0, "
        f">= {GOAL_SHARE:.0%} of the gap); for (b) only: not below random (mean difference >= 0).",
        "",
    ]
    order = list(METHODS)
    # Steps to saturation: where a mixture and budget ran at several step counts, the baselines against the steps
    curves = sorted({(m, b) for m, _, b in score if len({s for m2, s, b2 in score if (m2, b2) == (m, b)}) > 1})
    if curves:
        lines += [
            "## Steps to saturation (mean exact match; n = seeds)",
            "",
            "| mixture | budget | steps | " + " | ".join(BASELINES) + " |",
            "|---|---|---|" + "---|" * len(BASELINES),
        ]
        for mixture, budget in curves:
            for steps in sorted(s for m, s, b in score if (m, b) == (mixture, budget)):
                cells = []
                for method in BASELINES:
                    v = list(score[(mixture, steps, budget)].get(method, {}).values())
                    cells.append(f"{np.mean(v):.1f} (n={len(v)})" if v else "")
                lines.append(f"| ({mixture}) | {budget:.0%} | {steps} | " + " | ".join(cells) + " |")
        lines.append("")
    for (mixture, steps, budget), methods in sorted(score.items()):
        preset, clusters = MIXTURES[mixture]
        lines += [
            f"## ({mixture}) {preset or 'default pool'}, {clusters} clusters, budget {budget:.0%}, {steps} steps",
            "",
            "| method | exact match | − random | − stratified | gap share | goal |",
            "|---|---|---|---|---|---|",
        ]
        random_, stratified, oracle = (methods.get(m, {}) for m in ("random", "stratified", "oracle"))
        gap = paired(oracle, random_)[0] if oracle and random_ else math.nan
        for method in sorted(methods, key=lambda m: order.index(m) if m in order else len(order)):
            values = methods[method]
            v = np.array(list(values.values()))
            level = f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0:.1f} (n={len(v)})"
            vs_random = paired(values, random_) if method != "random" else (math.nan,) * 4
            vs_strat = paired(values, stratified) if method != "stratified" else (math.nan,) * 4
            share = vs_random[0] / gap if method not in ("random", "stratified", "oracle") and gap > 0 else math.nan
            goal = ""
            if method not in BASELINES and not math.isnan(vs_random[1]):
                if mixture == "b":
                    # not below random: strictly, a mean difference >= 0; "not shown" when the mean is below but the
                    # interval still reaches 0
                    met = vs_random[0] >= 0
                    if not met and vs_random[2] >= 0:
                        goal = "not shown (mean below, interval reaches 0)"
                else:
                    met = (
                        vs_random[0] >= GOAL_POINTS
                        and vs_strat[0] >= GOAL_POINTS
                        and vs_random[1] > 0
                        and vs_strat[1] > 0
                        and share >= GOAL_SHARE
                    )
                goal = "met" if met else goal or "**not met**"
            lines.append(
                f"| {method} | {level} | {_interval(*vs_random)} | {_interval(*vs_strat)} | "
                f"{'' if math.isnan(share) else f'{share:.0%}'} | {goal} |"
            )
        lines.append("")
    lines += _contrast_lines(score)
    lines += _visit_lines(rows)
    tmp = os.path.join(out_dir, f"{NAME}.md.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, os.path.join(out_dir, f"{NAME}.md"))

    # One panel per mixture at the step count most runs used (the others are the steps-to-saturation runs): the paired
    # difference to random against the budget, for at most PLOT_SERIES methods (the tables hold all of them)
    main_steps = Counter(int(row["steps"]) for row in rows).most_common(1)[0][0]
    panels = sorted({(m, s) for m, s, _ in score if s == main_steps})
    present = {x for (m, s, b), cell in score.items() if s == main_steps for x in cell} - {"random"}
    shown = [m for m in PLOT_ORDER if m in present]
    shown += sorted(present - set(shown), key=lambda m: order.index(m) if m in order else len(order))
    shown = shown[:PLOT_SERIES]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False, sharey=True)
    for ax, (mixture, steps) in zip(axes[0], panels):
        budgets = sorted(b for m, s, b in score if (m, s) == (mixture, steps))
        for i, method in enumerate(shown):
            xs, ys, errs = [], [], []
            for j, b in enumerate(budgets):
                cell = score[(mixture, steps, b)]
                if method in cell and "random" in cell:
                    mean, low, _, _ = paired(cell[method], cell["random"])
                    xs.append(j + (i - (len(shown) - 1) / 2) * 0.1)
                    ys.append(mean)
                    errs.append(0 if math.isnan(low) else mean - low)
            if xs:
                ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, linestyle="none", color=f"C{i}",
                            label=PLOT_LABELS.get(method, method))  # fmt: skip
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(budgets)), [f"{b:.0%}" for b in budgets])
        ax.set_xlabel("budget (share of the pool)")
        preset, clusters = MIXTURES[mixture]
        title = f"Mixture ({mixture}): {preset or 'default pool'},\n{clusters} clusters, {steps} steps"
        ax.set_title(title, fontsize=9)
    axes[0][0].set_ylabel("exact match minus random subset\n(points, paired by seed, 95% interval)")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]}
    if not handles:  # nothing paired with a random subset (e.g. one method alone): no empty plot
        plt.close(fig)
        return
    columns = min(3, len(handles))
    fig.set_size_inches(max(4.2 * len(panels), 3.4 * columns), 4.2)  # the legend's columns fit under the panels
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=columns, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08 + 0.04 * math.ceil(len(handles) / 3), 1, 1))
    tmp = os.path.join(out_dir, f"{NAME}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, os.path.join(out_dir, f"{NAME}.png"))


def _contrast_lines(score: dict[tuple[str, int, float], dict[str, dict[int, float]]]) -> list[str]:
    """A table of the CONTRASTS that ran: per mixture, budget and steps, the paired difference (exact match points)."""
    cells = sorted(score)
    rows = []
    for method, reference, what in CONTRASTS:
        values = {}
        for key in cells:
            pair = score[key]
            if method in pair and reference in pair:
                values[key] = _interval(*paired(pair[method], pair[reference]))
        if values:
            rows.append((method, reference, what, values))
    if not rows:
        return []
    shown = [key for key in cells if any(key in v for *_, v in rows)]
    header = " | ".join(f"({m}) {b:.0%}" + ("" if s == 200 else f", {s} steps") for m, s, b in shown)
    lines = [
        "## Contrasts (method − reference, paired by seed, mean [95% t-interval])",
        "",
        f"| what | method | reference | {header} |",
        "|---|---|---|" + "---|" * len(shown),
    ]
    for method, reference, what, values in rows:
        lines.append(f"| {what} | {method} | {reference} | " + " | ".join(values.get(k, "") for k in shown) + " |")
    return [*lines, ""]


VISIT_COLUMNS = (
    ("wrong_visits_first", "wrong, first third"),
    ("wrong_visits_middle", "wrong, middle third"),
    ("wrong_visits_last", "wrong, last third"),
    ("bad_visits_last", "noise family and bad source, last third"),
    ("answer_length_ratio", "answer length of the trained samples / the pool's"),
    ("short_answers_ratio", "share of them in the pool's shortest quarter / the pool's"),
    ("long_answers_ratio", "share in the longest quarter / the pool's"),
)


def _visit_lines(rows: list[dict]) -> list[str]:
    """Where rows recorded them: what each method trained on, as shares of its visits (mean over seeds)."""
    recorded = [row for row in rows if row.get("wrong_visits_first") not in (None, "")]
    if not recorded:
        return []
    cells: dict[tuple[str, float, str], list[dict]] = {}
    for row in recorded:
        cells.setdefault((row["mixture"], float(row["budget"]), row["method"]), []).append(row)
    order = list(METHODS)
    lines = [
        "## What the runs trained on (share of visits, mean over seeds; a subset's visits are its rows)",
        "",
        "| mixture | budget | method | seeds | " + " | ".join(label for _, label in VISIT_COLUMNS) + " |",
        "|---|---|---|---|" + "---|" * len(VISIT_COLUMNS),
    ]
    for mixture, budget, method in sorted(
        cells, key=lambda k: (k[0], k[1], order.index(k[2]) if k[2] in order else 0)
    ):
        group = cells[(mixture, budget, method)]
        values = [[float(row[c]) for row in group if row.get(c) not in (None, "")] for c, _ in VISIT_COLUMNS]
        cells_text = " | ".join(f"{np.mean(v):.2f}" if v else "" for v in values)  # a column older rows did not record
        lines.append(f"| ({mixture}) | {budget:.0%} | {method} | {len(group)} | {cells_text} |")
    return [*lines, ""]


def make_jobs(
    methods: list[str], mixtures: list[str], budgets: list[float], seeds: int, steps: list[int], first_seed: int = 0
) -> list[Job]:
    """One job per method, mixture, budget, seed and step count, seeds innermost-but-one (paired rows finish close)."""
    for name in methods:
        if name not in METHODS:
            raise ValueError(f"--methods: unknown method {name!r}; choose from {sorted(METHODS)}")
    for name in mixtures:
        if name not in MIXTURES:
            raise ValueError(f"--mixtures: unknown mixture {name!r}; choose from {sorted(MIXTURES)}")
    jobs = []
    for n_steps in steps:
        for seed in range(first_seed, first_seed + seeds):
            for mixture in mixtures:
                for budget in budgets:
                    # LEAD may reuse a sample often enough to fill every step within the budget
                    count = round(budget * POOL_SIZE)
                    max_reuse = max(8, math.ceil(n_steps * BATCH_SIZE / count))
                    for method in methods:
                        preset, clusters = MIXTURES[mixture]
                        if clusters == "computed" and METHODS[method]["kind"] != "lead":
                            # subsets do not use clusters: (b)'s baselines are (a)'s, run once
                            continue
                        jobs.append(
                            Job(
                                method,
                                budget,
                                seed,
                                n_steps,
                                max_reuse=max_reuse,
                                mixture=preset,
                                clusters=clusters,
                                # the default pool's lookup family can hold out 120 items, and it raises above
                                num_eval_per_family=MIXTURE_NUM_EVAL_PER_FAMILY if preset else 120,
                            )
                        )
    return jobs


def _label(job: Job) -> str:
    return next(k for k, v in MIXTURES.items() if v == (job.mixture, job.clusters))


def _run(job: Job) -> dict:
    """run_job in a worker, its console output (dataset bars, the Trainer's summary, warnings) silenced."""
    import contextlib
    import warnings

    import datasets

    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore")
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        return {"mixture": _label(job), "max_reuse": job.max_reuse, **run_job(job)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="random,stratified,oracle,lead_default")
    parser.add_argument("--mixtures", default="a,b,c")
    parser.add_argument("--budgets", default="0.05,0.1,0.25")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run: first-seed .. first-seed + seeds - 1")
    parser.add_argument("--steps", default="200", help="comma-separated step counts")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--summary-only", action="store_true", help="rewrite the .md and .png from the CSV; no runs")
    options = parser.parse_args()
    os.makedirs(options.out, exist_ok=True)
    csv_path = os.path.join(options.out, f"{NAME}.csv")
    machine = describe_machine()
    if options.summary_only:
        # the tables describe the machine that ran them, not the one that rewrites them
        machine = _recorded_machine(os.path.join(options.out, f"{NAME}.md")) or machine
        summarize(with_b_baselines(read_rows(csv_path)), options.out, machine)
        return
    jobs = make_jobs(
        options.methods.split(","),
        options.mixtures.split(","),
        [float(b) for b in options.budgets.split(",")],
        options.seeds,
        [int(s) for s in options.steps.split(",")],
        options.first_seed,
    )
    done = {
        (r["method"], r["mixture"], float(r["budget"]), int(r["seed"]), int(r["steps"])) for r in read_rows(csv_path)
    }
    todo = [j for j in jobs if (j.method, _label(j), j.budget, j.seed, j.steps) not in done]
    from trl_lead.embedded import load_embedded_default

    # build the cached warm-ups once, before the workers start
    from trl_lead.pool import MIXTURES as POOLS

    load_embedded_default()
    for name in {MIXTURES[label][0] for label in options.mixtures.split(",")} - {None}:
        if POOLS[name].pool_warmup_steps:
            load_embedded_default(mixture=name, warmup_steps=POOLS[name].pool_warmup_steps)
    # spawn: torch in forked workers can hang on OpenMP state inherited from the parent
    with ProcessPoolExecutor(max_workers=options.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_run, job) for job in todo]
        for future in tqdm(as_completed(futures), total=len(futures), desc="selection on mixtures"):
            append_row(csv_path, future.result())
            summarize(with_b_baselines(read_rows(csv_path)), options.out, machine)
    summarize(with_b_baselines(read_rows(csv_path)), options.out, machine)
    print(open(os.path.join(options.out, f"{NAME}.md")).read())


def _recorded_machine(path: str) -> str | None:
    """The machine named in an existing summary (its "Machine: ..." line, up to the first ". "), if any."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        line = next((x for x in f if x.startswith("Machine: ")), None)
    return line[len("Machine: ") :].split(". ", 1)[0] if line else None


def with_b_baselines(rows: list[dict]) -> list[dict]:
    """(b) is (a)'s pool: its baseline rows are (a)'s (subsets ignore clusters)."""
    has_b = {(r["steps"], r["budget"]) for r in rows if r["mixture"] == "b"}
    copies = [
        {**r, "mixture": "b"}
        for r in rows
        if r["mixture"] == "a" and r["method"] in BASELINES and (r["steps"], r["budget"]) in has_b
    ]
    return rows + copies


if __name__ == "__main__":
    main()
