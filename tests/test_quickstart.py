"""The README's quickstart and the real-model example config run as written, offline.

What a user with a network gets from the hub is swapped for stand-ins of the same kind, built here: the model name
points at a randomly initialised `Qwen2ForCausalLM` of tiny size saved locally, with a locally built tokenizer that
carries Qwen2.5's own chat template (TRL swaps in its training variant with `{% generation %}` markers for
`assistant_only_loss`, as it does for the real model); the dataset name points at a few rows in `trl-lib/Capybara`'s
format (`source`, `messages`). Everything else (the YAML, the Python code) runs as the README shows it, with two steps
and no bf16 on this CPU machine.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lead_qwen2.5_0.5b.yaml"
MODEL_ID = "Qwen/Qwen2.5-0.5B-Instruct"
DATASET_ID = "trl-lib/Capybara"
CPU = ["--bf16", "false", "--use_cpu", "true", "--report_to", "none", "--max_steps", "2"]


def readme_blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def readme_block_naming(language: str, needle: str) -> str:
    blocks = [b for b in readme_blocks(language) if needle in b]
    assert len(blocks) == 1, f"README.md should hold one ```{language} block naming {needle!r}, found {len(blocks)}"
    return blocks[0]


@pytest.fixture(scope="module")
def stand_in_model(tmp_path_factory) -> Path:
    """A tiny, randomly initialised Qwen2 model with a local tokenizer using Qwen2.5's chat template, saved."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl.chat_template_utils import qwen2_5_chat_template

    from trl_lead.embedded import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]})
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    tokenizer.chat_template = qwen2_5_chat_template
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    path = tmp_path_factory.mktemp("qwen2-stand-in")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def stand_in_dataset(tmp_path_factory) -> Path:
    """200 conversations in trl-lib/Capybara's format (a `source` and a `messages` list), one or two turns each."""
    from trl_lead.embedded import make_instruction_pool

    pool, _ = make_instruction_pool(num_train=420, num_eval_per_family=2, seed=0)
    rows = []
    for i in range(200):
        messages = list(pool[i]["messages"])
        if i % 3 == 0:  # a second turn
            messages += list(pool[i + 200]["messages"])
        rows.append({"source": pool[i]["family"], "messages": messages})
    path = tmp_path_factory.mktemp("capybara-stand-in")
    with open(path / "train.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def _example_script():
    spec = importlib.util.spec_from_file_location("sft_lead", ROOT / "examples" / "sft_lead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parse(config: Path, output_dir: Path):
    script = _example_script()
    parser = script.make_parser()
    return script, parser.parse_args_and_config(
        args=["--config", str(config), "--output_dir", str(output_dir), *CPU], fail_with_unknown_args=True
    )


def _rounds(output_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (output_dir / "lead_rounds.jsonl").read_text().splitlines()]
    return [r for r in records if "round" in r]


def test_readme_yaml_is_the_example_and_names_a_real_model_and_dataset(tmp_path):
    block = readme_block_naming("yaml", MODEL_ID)
    (tmp_path / "readme.yaml").write_text(block)
    _, readme = _parse(tmp_path / "readme.yaml", tmp_path / "a")
    _, example = _parse(EXAMPLE, tmp_path / "a")
    assert readme[0].dataset_name == DATASET_ID and readme[2].model_name_or_path == MODEL_ID
    for from_readme, from_example in zip(readme, example):
        assert from_readme == from_example  # the README shows the example file's settings, field for field


@pytest.mark.slow
def test_example_yaml_trains_two_steps_through_the_example_script(tmp_path, stand_in_model, stand_in_dataset):
    """examples/sft_lead.py with examples/lead_qwen2.5_0.5b.yaml, the model and dataset names swapped for stand-ins."""
    from transformers import AutoModelForCausalLM

    script, (script_args, training_args, model_args, dataset_args) = _parse(EXAMPLE, tmp_path / "run")
    assert isinstance(training_args, __import__("trl_lead").LEADConfig)
    assert training_args.assistant_only_loss and training_args.lead_budget == 0.1
    script_args.dataset_name = str(stand_in_dataset)
    model_args.model_name_or_path = str(stand_in_model)
    script.main(script_args, training_args, model_args, dataset_args)

    rounds = _rounds(tmp_path / "run")
    # two steps of batch 8 (gradient accumulation 2): rounds of 2% of 200 = 4 samples take one step each
    assert [r["round"] for r in rounds] == [0, 1]
    ids = np.concatenate([r["sample_ids"] for r in rounds])
    assert len(ids) == 8 and len(set(ids.tolist())) <= 20  # within the budget of 10% of 200
    before = AutoModelForCausalLM.from_pretrained(stand_in_model)
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "run")
    moved = [not torch.equal(p, q) for p, q in zip(before.parameters(), after.parameters())]
    assert any(moved)  # the saved model is the trained one


@pytest.mark.slow
def test_readme_python_quickstart_trains_two_steps(tmp_path, monkeypatch, stand_in_model, stand_in_dataset):
    """The README's Python example, run as written with the model name and the dataset's source swapped."""
    code = readme_block_naming("python", MODEL_ID)
    loading = f'load_dataset("{DATASET_ID}", split="train")'
    assert code.count(f'"{MODEL_ID}"') == 1 and code.count(loading) == 1 and code.count("trainer.train()") == 1
    code = code.replace(f'"{MODEL_ID}"', repr(str(stand_in_model)))
    code = code.replace(loading, f'load_dataset("json", data_dir={str(stand_in_dataset)!r}, split="train")')
    # this CPU machine: no bf16, two steps
    code = code.replace("trainer.train()", "trainer.args.max_steps = 2\ntrainer.train()")
    code = code.replace("LEADConfig(", "LEADConfig(use_cpu=True, bf16=False, report_to='none', ", 1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    trainer = namespace["trainer"]
    # Qwen2.5's template, as TRL patches it, returns assistant masks: every row has a prompt that is not trained, so
    # the filter compares answers within groups of similar prompts (no fallback to clusters)
    labels = trainer.train_dataset["labels"]
    assert all(row[0] == -100 and any(t != -100 for t in row) for row in labels)
    assert trainer._lead_filter_groups == "prompts"
    assert trainer.state.global_step == 2
    assert len(trainer.lead_state.rounds) >= 2
    assert np.isfinite(trainer.lead_state.iu[trainer.lead_state.use_count > 0]).all()
    # as with SFTTrainer, two steps under `logging_steps` log no step: the summary has the run's mean loss
    assert np.isfinite(trainer.state.log_history[-1]["train_loss"])


def test_readme_custom_policy_decides_the_rounds(tmp_path, pool, tokenizer, make_model):
    """The README's custom policy, defined as written, drives mixture rounds: with a weight of 0 on the unlearnable
    family no round takes any of its samples, while the other families each get some (a known answer)."""
    from trl_lead import LEADConfig, LEADSFTTrainer
    from trl_lead.pool import CLUSTER_COLUMN, FAMILIES, NOISE_FAMILY

    code = readme_block_naming("python", "policy=FixedShares(")
    namespace: dict = {}
    exec(compile(code[: code.index("trainer = ")], "README.md", "exec"), namespace)
    weights = [0.0 if family == NOISE_FAMILY else 1.0 for family in FAMILIES]
    args = LEADConfig(output_dir=str(tmp_path), lead_cluster_column=CLUSTER_COLUMN, lead_round_size=16,
                      lead_budget=0.5, max_steps=6, per_device_train_batch_size=8, use_cpu=True, bf16=False,
                      report_to="none", save_strategy="no", assistant_only_loss=True)  # fmt: skip
    trainer = LEADSFTTrainer(
        model=make_model(), args=args, train_dataset=pool, processing_class=tokenizer,
        policy=namespace["FixedShares"](weights),
    )  # fmt: skip
    trainer.train()
    ids = np.concatenate([r["sample_ids"] for r in trainer.lead_state.rounds])
    families = np.asarray(trainer.lead_state.cluster)[ids]
    assert len(ids) == 48
    assert FAMILIES.index(NOISE_FAMILY) not in set(families.tolist())
    assert len(set(families.tolist())) >= 5
