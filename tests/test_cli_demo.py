"""`trl-lead demo`: its clean shares, rounds view, figure and round table on hand-worked rounds, and the demo end to
end (console, summary, plot, `--mixture`, `--paper`)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from trl_lead.cli import (
    CleanShares,
    clean_shares,
    print_round_table,
    round_figure,
    round_view,
)
from trl_lead.settings import PRESETS

# A pool of 10: cluster 0 (easy) 1 row, cluster 1 (copy) 4 rows, cluster 8 (bad_source) 5 rows
CLUSTER = np.array([0, 1, 1, 1, 1, 8, 8, 8, 8, 8])
CLEAN = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 1], dtype=bool)  # clean share by cluster: 1, 1/2, 2/5; pool 1/2


def _round(index, ids, selected, reward=0.1, rewarded=(1,), warmup=False, filtered=0):
    return dict(round=index, sample_ids=ids, selected=selected, reward=reward, rewarded=list(rewarded),
                warmup=warmup, filtered=filtered)  # fmt: skip


ROUNDS = [
    _round(0, [0, 1, 2], 3, warmup=True, rewarded=()),
    _round(1, [2, 3, 9, 9], 5, reward=-0.25, filtered=2),
    _round(2, [0, 5], 6),
    _round(3, [1, 5], 6, reward=0.0, rewarded=()),  # budget spent: no reward measured
]


def test_clean_shares_on_a_hand_worked_pool():
    """Distinct samples {0, 1, 2, 3, 5, 9}: 4 of 6 clean. Chance: 2 * sqrt(1/4 / 6 * 4/9) = 0.2722 (a draw of 6 of 10
    without replacement). An equal share of 6 over clusters of 1, 4 and 5 rows: 1, 2.5, 2.5 rows, clean share
    (1 + 2.5 / 2 + 2.5 * 2/5) / 6 = 3.25/6. Catches repeats counted twice, warm-up rounds left out, a binomial margin
    (no finite-pool factor: 0.408) and equal shares not capped by a cluster's size ((1 + 1/2 + 2/5) / 3 = 0.633)."""
    shares = clean_shares(ROUNDS, CLUSTER, CLEAN, random_rows=np.array([5, 6, 9]))
    assert shares.pool == 0.5 and shares.lead == pytest.approx(4 / 6) and shares.random == pytest.approx(1 / 3)
    assert shares.chance == pytest.approx(2 * math.sqrt(0.25 / 6 * 4 / 9))
    assert shares.equal_clusters == pytest.approx(3.25 / 6)
    assert not shares.lead_beats_pool and "did not beat the pool's clean share" in shares.verdict()
    # Only clean samples (4 of them): 1 - 1/2 = 0.5 is above the chance margin 2 * sqrt(1/4 / 4 * 6/9) = 0.408
    only_clean = clean_shares([_round(0, [0, 1, 2, 9], 4)], CLUSTER, CLEAN, np.array([0]))
    assert only_clean.lead == 1.0 and only_clean.chance == pytest.approx(2 * math.sqrt(0.25 / 4 * 6 / 9))
    assert only_clean.lead_beats_pool and only_clean.verdict().startswith("selection beat the pool's clean share")
    assert only_clean.lead_beats_equal_clusters and "equal share" not in only_clean.verdict()
    # Above the pool by more than chance, but not above an equal share per cluster: the title says so
    uniform = CleanShares(pool=0.45, lead=0.5, random=0.46, equal_clusters=0.505, chance=0.039)
    assert uniform.lead_beats_pool and not uniform.lead_beats_equal_clusters
    assert uniform.verdict().endswith("but not an equal share per cluster (50.5%)")
    # On the margin exactly: not above it, so not beaten
    assert not CleanShares(pool=0.5, lead=0.75, random=0.5, equal_clusters=0.5, chance=0.25).lead_beats_pool


def test_round_view_on_hand_worked_rounds():
    """Warm-up rounds are not plotted but their samples count as selected; shares are per cluster present in the pool
    with the unlearnable one last; a round without a measured reward plots none; the budget is spent in the first round
    whose cumulative distinct count reaches it."""
    view = round_view(ROUNDS, CLUSTER, CLEAN, budget=6)
    assert view["round"].tolist() == [1, 2, 3]
    assert view["clusters"] == [0, 1, 8]
    np.testing.assert_allclose(view["cluster_share"], [[0, 2 / 4, 2 / 4], [1 / 2, 0, 1 / 2], [0, 1 / 2, 1 / 2]])
    np.testing.assert_allclose(view["clean_share"], [3 / 4, 1 / 2, 1 / 2])
    # distinct so far: {0,1,2} then +{3,9}: 4 of 5 clean; +{5}: 4 of 6; round 3 adds none
    np.testing.assert_allclose(view["distinct_clean_share"], [4 / 5, 4 / 6, 4 / 6])
    assert view["reward"][:2].tolist() == [-0.25, 0.1] and np.isnan(view["reward"][2])
    assert view["budget_spent"] == 2 and round_view(ROUNDS, CLUSTER, CLEAN, budget=7)["budget_spent"] is None
    assert view["pool_learnable_share"] == 0.5


def test_round_figure_has_the_three_panels():
    """Top: the learnable clusters as one stacked band, each unlearnable one hatched, the pool's learnable share
    dashed; middle: the clean shares with the pool's dashed; bottom: the reward and the budget line; the title carries
    the verdict."""
    import matplotlib.pyplot as plt

    view = round_view(ROUNDS, CLUSTER, CLEAN, budget=6)
    shares = clean_shares(ROUNDS, CLUSTER, CLEAN, np.array([5, 6, 9]))
    fig = round_figure(view, shares, "toy")
    try:
        top, middle, bottom = fig.axes
        bands = top.collections
        assert [band.get_label() for band in bands] == ["the learnable task families", "bad_source (unlearnable)"]
        assert [bool(band.get_hatch()) for band in bands] == [False, True]
        # the learnable band's top edge is the learnable share of each round: easy + copy, [0 + 1/2, 2/4 + 0, 0 + 1/2]
        top_edge = bands[0].get_paths()[0].vertices[:, 1].max()
        assert top_edge == pytest.approx(1 / 2)
        dashed = {line.get_label(): line.get_ydata()[0] for ax in (top, middle) for line in ax.get_lines()
                  if line.get_linestyle() == "--"}  # fmt: skip
        assert dashed == {"the pool's unlearnable share above": 0.5, "pool (50%)": 0.5}
        clean_lines = {line.get_label(): list(line.get_ydata()) for line in middle.get_lines()}
        assert clean_lines["LEAD: distinct samples so far"] == pytest.approx([4 / 5, 4 / 6, 4 / 6])
        reward = bottom.get_lines()[0].get_ydata()
        assert reward[:2].tolist() == [-0.25, 0.1] and np.isnan(reward[2])
        assert bottom.get_lines()[1].get_xdata()[0] == 2  # the budget line
        assert "did not beat the pool's clean share" in fig._suptitle.get_text()
    finally:
        plt.close(fig)


def test_round_table_lines(capsys):
    print_round_table(ROUNDS, CLUSTER)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["round", "reward", "selected", "filtered", "distinct", "clusters", "(samples)"]
    assert lines[1].split() == ["0", "-", "3", "0", "3", "warm-up:", "copy", "2,", "easy", "1"]
    assert lines[2].split() == ["1", "-0.2500", "4", "2", "5", "copy", "2,", "bad_source", "2"]  # ties: by cluster id
    assert lines[4].split()[:2] == ["3", "-"]  # no reward measured
    assert len(lines) == 1 + len(ROUNDS)


def test_demo_refuses_an_unknown_mixture_before_any_work(monkeypatch, capsys):
    import trl_lead.cli as cli
    import trl_lead.embedded as embedded

    def no_work(*args, **kwargs):
        raise AssertionError("the demo started work")

    monkeypatch.setattr(embedded, "load_embedded_default", no_work)
    monkeypatch.setattr(cli, "train_lead", no_work)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--mixture", "conflict-z"])
    assert exit_info.value.code == 2
    assert "--mixture: invalid choice: 'conflict-z'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["demo", "--max-steps", "0"])
    assert "--max-steps=0: train at least one step" in capsys.readouterr().err


def _spy_runs(monkeypatch):
    """Catch the two trainers the demo trains, as it returns them."""
    import trl_lead.cli as cli

    trained = {}

    def catching(name, train):
        def spy(*args, **kwargs):
            trained[name] = train(*args, **kwargs)
            return trained[name]

        return spy

    monkeypatch.setattr(cli, "train_lead", catching("lead", cli.train_lead))
    monkeypatch.setattr(cli, "_train_random_subset", catching("random", cli._train_random_subset))
    return trained


def _read_rounds(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.numerics
def test_demo_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """On the default mixture: the summary's scores are the exact match of the three models it names, recomputed here
    from the models themselves; the clean shares are independent counts over the round log and the random run's own
    training set; the console is a round table matching the log, with no per-step dicts, no dataset bars and no
    `gradient_checkpointing` warning. Catches scores of the wrong model, clean shares of another sample set (e.g. the
    last round only, or the whole pool), a table out of step with the log, and the Trainer's console output back."""
    import matplotlib.image
    from transformers import AutoModelForCausalLM

    import trl_lead.cli as cli
    from trl_lead.embedded import exact_match, load_embedded_default
    from trl_lead.pool import make_instruction_pool

    trained = _spy_runs(monkeypatch)
    out = tmp_path / "demo"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli.main(["demo", "--output-dir", str(out), "--max-steps", "4"])
    console = capsys.readouterr()
    assert not [w for w in caught if "gradient_checkpointing" in str(w.message)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mixture"] == cli.DEFAULT_DEMO_MIXTURE == "conflict-a"

    base = load_embedded_default(seed=0)
    pool, held_out = make_instruction_pool(mixture="conflict-a", seed=0)
    models = {
        "base": AutoModelForCausalLM.from_pretrained(base.model_path),
        "random": trained["random"].model,
        "lead": trained["lead"].model,
    }
    assert set(summary["scores"]) == set(models)
    for name, model in models.items():
        assert summary["scores"][name] == exact_match(model, base.tokenizer, held_out), name
    assert summary["scores"]["lead"] != summary["scores"]["base"]  # 4 steps at the demo's rate move the answers

    rounds = _read_rounds(out / "lead" / "lead_rounds.jsonl")
    assert len(rounds) == 2 and all(len(r["sample_ids"]) == 32 for r in rounds)  # 4 steps of 16 = 2 rounds of 32
    assert [r["sample_ids"] for r in rounds] == [r["sample_ids"] for r in trained["lead"].lead_state.rounds]
    corrupted = np.array(pool["is_corrupted"])
    distinct = {i for r in rounds for i in r["sample_ids"]}
    shares = summary["clean_share"]
    assert shares["pool"] == pytest.approx(1 - corrupted.mean())
    assert shares["lead"] == pytest.approx(1 - np.mean([corrupted[i] for i in distinct]))
    assert shares["random"] == pytest.approx(1 - np.mean(trained["random"].train_dataset["is_corrupted"]))
    assert len(trained["random"].train_dataset) == trained["lead"].lead_settings.budget == 500

    lines = console.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:5] == ["round", "reward", "selected", "filtered",
                                                                          "distinct"])  # fmt: skip
    for line, record in zip(lines[header + 1 : header + 3], rounds):
        fields = line.split()
        assert fields[:5] == [str(record["round"]), f"{record['reward']:+.4f}", "32", str(record["filtered"]),
                              str(record["selected"])]  # fmt: skip
        assert fields[5] in {"easy", "copy", "format", "reverse", "sort", "add", "lookup", "noise", "bad_source"}
    assert lines[header + 3].startswith("[3/4]")
    verdict = "selection beat" if shares["lead_beats_pool"] else "selection did not beat"
    assert any(line.strip().startswith(verdict) for line in lines)
    everything = console.out + console.err
    assert "'loss'" not in everything and "grad_norm" not in everything  # no Trainer log dict
    assert "Tokenizing" not in everything and "Loading weights" not in everything  # no dataset / loading bars
    assert "LEAD: 100%" in console.err and "random: 100%" in console.err  # one bar per training run
    image = matplotlib.image.imread(out / "lead_rounds.png")
    assert image.shape[:2] == (990, 1210)  # 11 x 9 inches at 110 dpi


@pytest.mark.slow
def test_demo_on_the_embedded_pool_with_the_paper_choices(tmp_path, monkeypatch):
    """`--mixture none` trains on the embedded default pool (8 families, no bad source); `--paper` passes every paper
    choice to LEADConfig, whatever its defaults, and the rounds are single-cluster."""
    import trl_lead.cli as cli
    from trl_lead.embedded import load_embedded_default

    trained = _spy_runs(monkeypatch)
    out = tmp_path / "demo"
    cli.main(["demo", "--output-dir", str(out), "--max-steps", "2", "--mixture", "none", "--paper"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mixture"] == "none"
    lead = trained["lead"]
    default_pool = load_embedded_default(seed=0).train_dataset
    assert lead.lead_state.cluster.tolist() == default_pool["family_id"]
    assert summary["clean_share"]["pool"] == pytest.approx(1 - np.mean(default_pool["is_corrupted"]))
    # the paper's preset, but for the demo's reuse cap
    assert lead.args.selection_choices() == {**PRESETS["paper"], "max_reuse": cli.DemoSettings().max_reuse}
    assert summary["settings"]["lead_preset"] == "paper"
    rounds = _read_rounds(out / "lead" / "lead_rounds.jsonl")
    assert len(rounds) == 1 and isinstance(rounds[0]["cluster"], int)
