"""The benchmark plots a person reads: at most six series a panel, no empty plots, and redrawn from committed CSVs."""

from __future__ import annotations

import numpy as np

from envs.benchmark_report import PANEL_SERIES, _panels, read_csv, write_csv, write_plot


def test_panels_hold_at_most_six_series_with_the_reference_in_each():
    names = [f"p{i}" for i in range(9)] + ["uniform"]
    groups = _panels(names)
    assert all(len(g) <= PANEL_SERIES for g in groups)
    assert all("uniform" in g for g in groups)
    assert sorted({n for g in groups for n in g}) == sorted(names)  # every policy drawn
    assert _panels(["a", "b", "c"]) == [["a", "b", "c"]]  # few policies: one panel as given


def test_no_regret_plot_where_the_env_knows_no_regret(tmp_path):
    runs = {"uniform": [{"seed": 0, "reward": np.zeros(4), "regret": np.full(4, np.nan)}]}
    assert write_plot(tmp_path / "x.png", runs, "t") is False
    assert not (tmp_path / "x.png").exists()
    runs["uniform"][0]["regret"] = np.ones(4)
    assert write_plot(tmp_path / "x.png", runs, "t") is True
    assert (tmp_path / "x.png").stat().st_size > 0


def test_csv_round_trip_gives_back_the_runs(tmp_path):
    rng = np.random.default_rng(0)
    runs = {
        name: [
            {
                "policy": name,
                "seed": seed,
                "reward": rng.random(5).round(4),
                "regret": rng.random(5).round(4),
                "quality": np.r_[0.5, np.nan, 0.25, np.nan, np.nan, 0.75],
            }
            for seed in range(2)
        ]
        for name in ("exp3s", "uniform")
    }
    write_csv(tmp_path / "r.csv.gz", runs)
    back = read_csv(tmp_path / "r.csv.gz")
    assert sorted(back) == ["exp3s", "uniform"]
    for name in runs:
        for run, got in zip(runs[name], sorted(back[name], key=lambda r: r["seed"])):
            np.testing.assert_allclose(got["reward"], run["reward"])
            np.testing.assert_allclose(got["regret"], run["regret"])
            # the reset's quality (index 0) is not in the CSV; the rounds' are
            np.testing.assert_allclose(got["quality"][1:], run["quality"][1:])
            assert np.isnan(got["quality"][0])
