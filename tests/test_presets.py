"""One source of the selection's defaults: every entry point resolves a preset to the same settings."""

from __future__ import annotations

import warnings

import gymnasium
import pytest

import envs  # noqa: F401  (registers the environments)
from benchmarks.selection import DEFAULT_METHOD, METHODS, PAPER
from trl_lead import LEADConfig
from trl_lead.policies import make_policy
from trl_lead.settings import PRESET_FIELDS, PRESETS, SelectionSettings, preset_settings

CPU = dict(output_dir="unused", use_cpu=True, bf16=False, report_to="none")


def config_settings(**lead) -> dict:
    return LEADConfig(**CPU, **lead).selection_choices()


def without_policy(settings: dict) -> dict:
    return {name: value for name, value in settings.items() if name != "policy"}


def test_the_two_presets_differ_where_the_evidence_moved_away_from_the_paper():
    differ = {name for name in PRESET_FIELDS if PRESETS["default"][name] != PRESETS["paper"][name]}
    assert differ == {
        "round_mode", "fine_selection", "reward", "sample_filter", "filter_keep", "filter_groups", "filter_revisits",
        "split_by_size", "filter_min_spread",
    }  # fmt: skip
    assert PRESETS["paper"]["round_mode"] == "single" and PRESETS["paper"]["fine_selection"] == "top"
    assert PRESETS["paper"]["reward"] == "idu_drop" and PRESETS["paper"]["sample_filter"] == "none"


def test_default_entry_points_resolve_to_the_same_settings():
    expected = PRESETS["default"]
    assert config_settings() == expected
    # the defaults the evidence chose, written out (docs/configuration.md)
    assert config_settings() == dict(
        policy="exp3s", round_mode="mixture", fine_selection="random", reward="first_visit", reward_scaling="minmax",
        sample_filter="small_loss", filter_z=2.5, filter_keep=None, filter_groups="prompts", filter_revisits=False,
        filter_min_spread=0.6, split_by_size=True, budget_pace=0.0, max_reuse=4, smoothing=0.5,
        gradient_correction=True, initial_score="loss",
    )  # fmt: skip
    assert SelectionSettings(round_size=8, budget=100).choices() == without_policy(expected)
    proxy = gymnasium.make("trl_lead/ProxyTraining-v0").unwrapped
    assert proxy.settings.choices() == without_policy(expected)
    live = gymnasium.make("trl_lead/LiveTraining-v0").unwrapped  # builds no trainer before reset
    assert live.selection == expected
    method = {name: value for name, value in METHODS[DEFAULT_METHOD].items() if name.startswith("lead_")}
    assert config_settings(**method) == expected


def test_paper_entry_points_resolve_to_the_same_settings():
    expected = PRESETS["paper"]
    assert config_settings(lead_preset="paper") == expected
    assert SelectionSettings.for_pool(100, 8, 0.5, "paper").choices() == without_policy(expected)
    proxy = gymnasium.make("trl_lead/ProxyTraining-v0", preset="paper").unwrapped
    assert proxy.settings.choices() == without_policy(expected)
    assert gymnasium.make("trl_lead/LiveTraining-v0", preset="paper").unwrapped.selection == expected
    assert config_settings(**PAPER) == expected
    lead = {name: value for name, value in METHODS["lead"].items() if name.startswith("lead_")}
    assert config_settings(**lead) == expected


def test_fields_set_one_by_one_override_the_preset():
    settings = config_settings(lead_preset="paper", lead_reward="first_visit", lead_max_reuse=8)
    assert settings == {**PRESETS["paper"], "reward": "first_visit", "max_reuse": 8}
    proxy = gymnasium.make("trl_lead/ProxyTraining-v0", preset="paper", reward="first_visit").unwrapped
    assert proxy.settings.reward == "first_visit" and proxy.settings.round_mode == "single"
    live = gymnasium.make("trl_lead/LiveTraining-v0", round_mode="single", lead_kwargs={"lead_reward": "mean_idu"})
    assert live.unwrapped.selection == {**PRESETS["default"], "round_mode": "single", "reward": "mean_idu"}
    assert isinstance(live.action_space, gymnasium.spaces.Discrete)


def test_unknown_presets_and_settings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"`lead_preset='fast'` is not one of \['default', 'paper'\]"):
        LEADConfig(**CPU, lead_preset="fast")
    with pytest.raises(ValueError, match="not preset settings"):
        preset_settings("default", rewards="idu_drop")
    with pytest.raises(ValueError, match="not preset settings"):
        gymnasium.make("trl_lead/ProxyTraining-v0", rewards="idu_drop")
    with pytest.raises(ValueError, match="takes no `policy`"):
        gymnasium.make("trl_lead/ProxyTraining-v0", policy="ucb1")


def test_the_proxy_says_what_it_cannot_model():
    default = gymnasium.make("trl_lead/ProxyTraining-v0").unwrapped
    assert set(default.unmodeled) == {"sample_filter", "filter_groups", "filter_min_spread"}
    held_back = []  # what `unmodeled` says of the gate: the surrogate's spread lies about it, seed by seed
    for seed in range(8):
        default.reset(seed=seed)
        held_back.append(default.selector.filter_held_back())
    assert any(held_back) and not all(held_back)
    assert gymnasium.make("trl_lead/ProxyTraining-v0", preset="paper").unwrapped.unmodeled == {}


def lead_warnings(**lead) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LEADConfig(**CPU, **lead)
    return [str(w.message) for w in caught if "lead_" in str(w.message)]


@pytest.mark.parametrize(
    "lead, field, why",
    [
        ({"lead_filter_z": 3.0}, "lead_filter_z=3.0", "z-score threshold is used by"),  # small_loss, no revisits
        ({"lead_preset": "paper", "lead_filter_keep": 0.3}, "lead_filter_keep=0.3", "only `lead_sample_filter='sm"),
        ({"lead_sample_filter": "loss_z", "lead_filter_groups": "clusters"}, "lead_filter_groups", "compares within"),
        ({"lead_preset": "paper", "lead_filter_revisits": False}, "lead_filter_revisits", "filters nothing"),
        ({"lead_round_mode": "single", "lead_split_by_size": False}, "lead_split_by_size", "only mixture rounds"),
        ({"lead_cluster_column": "family_id", "lead_num_clusters": 4}, "lead_num_clusters=4", "not computed"),
        ({"lead_cluster_column": "family_id", "lead_clusters": "embedding"}, "lead_clusters", "not computed"),
        (
            {"lead_preset": "paper", "lead_initial_score": "none"},
            "lead_initial_score='none'",
            "still runs the scoring",
        ),
        ({"lead_enabled": False, "lead_reward": "idu_drop"}, "lead_reward", "trains as SFTTrainer"),
    ],
)
def test_a_setting_without_effect_warns_once_naming_the_field_and_why(lead, field, why):
    messages = lead_warnings(**lead)
    assert len(messages) == 1 and field in messages[0] and why in messages[0], messages


@pytest.mark.parametrize(
    "lead",
    [
        {},  # the default preset
        {"lead_preset": "paper"},
        {"lead_filter_z": 2.5, "lead_preset": "paper"},  # the preset's own value changes nothing: no warning
        {"lead_sample_filter": "loss_z", "lead_filter_z": 3.0},  # used by loss_z
        {"lead_filter_revisits": True, "lead_filter_z": 3.0},  # used by the revisit rules
        {"lead_preset": "paper", "lead_initial_score": "none", "lead_cluster_column": "family_id"},  # no pass at all
        {"lead_initial_score": "none", "lead_sample_filter": "none", "lead_clusters": "embedding"},
    ],
)
def test_settings_with_an_effect_do_not_warn(lead):
    assert lead_warnings(**lead) == []


def test_a_setting_the_trainer_arguments_override_warns(tmp_path, pool, tokenizer, make_model):
    from trl_lead import LEADSFTTrainer

    args = LEADConfig(
        **{**CPU, "output_dir": str(tmp_path)}, lead_policy="ucb1", lead_num_clusters=3, lead_sample_filter="none"
    )
    with pytest.warns(UserWarning, match=r"\['lead_policy'\] have no effect: the `policy` passed"):
        with pytest.warns(UserWarning, match=r"\['lead_num_clusters'\] have no effect: the `clusters` passed"):
            LEADSFTTrainer(
                model=make_model(),
                args=args,
                train_dataset=pool,
                processing_class=tokenizer,
                policy=make_policy("exp3"),
                clusters=pool["family_id"],
            )
