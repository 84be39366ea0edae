"""Config parsing as TRL does it, and the `trl-lead sft` entry point end to end on the embedded default."""

from __future__ import annotations

import json

import numpy as np
import pytest
from trl import ModelConfig, ScriptArguments, TrlParser

from trl_lead import LEADConfig


def test_trl_parser_reads_lead_fields_from_yaml_and_command_line(tmp_path):
    config = tmp_path / "x.yaml"
    config.write_text(
        "output_dir: out\nlead_policy: ucb1\nlead_round_size: 20\nlead_budget: 0.1\nuse_cpu: true\nbf16: false\n"
    )
    parser = TrlParser((ScriptArguments, LEADConfig, ModelConfig))
    _, args, _ = parser.parse_args_and_config(
        args=["--config", str(config), "--lead_reward", "first_visit", "--lead_gradient_correction", "false"]
    )
    assert isinstance(args, LEADConfig)
    assert (args.lead_policy, args.lead_round_size, args.lead_budget) == ("ucb1", 20, 0.1)
    assert args.lead_reward == "first_visit" and args.lead_gradient_correction is False
    with pytest.raises(SystemExit):  # argparse names the field and its choices
        parser.parse_args_and_config(args=["--config", str(config), "--lead_reward", "accuracy"])


def test_policy_kwargs_reach_the_policy_from_the_command_line_or_are_refused_naming_the_field(
    tmp_path, pool, tokenizer, make_model
):
    """A JSON object on the command line becomes the policy's constructor arguments (as `lr_scheduler_kwargs` does);
    a parameter the policy does not have is refused when the config is built, naming the field."""
    from trl_lead import LEADSFTTrainer

    parser = TrlParser((ScriptArguments, LEADConfig, ModelConfig))
    common = ["--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false", "--report_to", "none"]
    _, args, _ = parser.parse_args_and_config(
        args=[*common, "--lead_policy", "boltzmann", "--lead_policy_kwargs", '{"temperature": 0.05, "floor": 0.3}']
    )
    assert args.lead_policy_kwargs == {"temperature": 0.05, "floor": 0.3}
    args.lead_cluster_column, args.max_steps = "family_id", 1
    trainer = LEADSFTTrainer(model=make_model(), args=args, train_dataset=pool, processing_class=tokenizer)
    policy = trainer.lead_run.policy
    assert (policy.name, policy.temperature, policy.floor, policy.step) == ("boltzmann", 0.05, 0.3, 0.2)
    for bad in ('{"temp": 0.1}', '{"temperature": -1}'):
        with pytest.raises(ValueError, match="lead_policy_kwargs"):
            parser.parse_args_and_config(args=[*common, "--lead_policy", "boltzmann", "--lead_policy_kwargs", bad])


@pytest.mark.slow
def test_trl_lead_sft_runs_the_demo_config(tmp_path):
    from trl_lead.cli import main

    out = tmp_path / "run"
    main(
        [
            "sft",
            "--config",
            "examples/lead_demo.yaml",
            "--output_dir",
            str(out),
            "--max_steps",
            "4",
            "--save_steps",
            "2",
        ]
    )
    rounds = [json.loads(line) for line in (out / "lead_rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1]  # 4 steps of 16 = 2 rounds of 32
    assert all(len(r["sample_ids"]) == 32 for r in rounds)
    assert (out / "checkpoint-2" / "lead_state.npz").exists() and (out / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.numerics
def test_trl_lead_cluster_writes_the_dataset_and_a_plot(tmp_path):
    """The written dataset is the training pool in its order with IFD clusters that are intervals of IFD numbered
    by increasing IFD, IFD recomputed here with `ifd_scores` on the same model. Catches labels written in another
    row order or numbered otherwise, and rows dropped or reordered."""
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM

    from trl_lead.cli import _load_model_and_data, main
    from trl_lead.scoring import ifd_scores

    out = tmp_path / "clusters"
    argv = ["--config", "examples/lead_demo.yaml", "--output_dir", str(out), "--lead_num_clusters", "4",
            "--lead_cluster_column", "ifd_cluster"]  # fmt: skip
    main(["cluster", *argv])
    clustered = load_from_disk(str(out / "clustered"))
    labels = np.array(clustered["ifd_cluster"])
    assert len(labels) == 2000 and set(labels.tolist()) == {0, 1, 2, 3}
    script_args, args, _, model_path, tokenizer, dataset = _load_model_and_data(argv, "test")  # the same inputs
    train = dataset[script_args.dataset_train_split]
    assert clustered["messages"] == train["messages"]
    model = AutoModelForCausalLM.from_pretrained(model_path)
    ifd = ifd_scores(model, tokenizer, train, max_length=args.max_length, append_eos=True, show_progress=False)
    for k in range(3):
        assert ifd[labels == k].max() <= ifd[labels == k + 1].min() + 1e-6, k
    assert (out / "clusters.png").stat().st_size > 0
