"""SFTTrainer behaviours run with the two names swapped: each scenario is a short script as a TRL user writes it, run
once with `trl.SFTTrainer`/`SFTConfig` and once with `LEADSFTTrainer`/`LEADConfig` (default `lead_*` settings: no
cluster column), and the pass rates compared.

Run by hand (not part of the tests; ~5-10 min on 2 CPU cores):

    python benchmarks/dropin_suite.py                  # every scenario, markdown table on stdout
    python benchmarks/dropin_suite.py packing eval_dict   # some of them

Each scenario asserts what the TRL documentation promises for the feature (training runs its steps with finite
losses, evaluation reports its metrics, errors name the problem). The scenarios are written here, on the project's
embedded tiny model and tokenizer (no network), after the features TRL's SFT documentation and its
`tests/test_sft_trainer.py` exercise; they are not TRL's test file itself, whose hub models and datasets are out of
reach offline. Where LEAD differs on purpose (README "Differences from SFTTrainer"), the scenario says what LEAD must
do instead, and a failure of that is counted as a failure.

Results: `benchmarks/results/dropin_suite.md`.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import traceback
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from datasets import Dataset, IterableDataset, concatenate_datasets  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from trl_lead import LEADConfig, LEADSFTTrainer  # noqa: E402
from trl_lead.embedded import build_tiny_model, build_tiny_moe_model, build_tokenizer  # noqa: E402
from trl_lead.pool import make_instruction_pool  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
TOKENIZER = build_tokenizer()
POOL, HELD_OUT = make_instruction_pool(num_train=24, num_eval_per_family=1, seed=0)


def user(row):
    return row["messages"][0]["content"]


def answer(row):
    return row["messages"][1]["content"]


def rows(kind: str) -> Dataset:
    makers = {
        "messages": None,
        "text": lambda r: {"text": f"{user(r)} {answer(r)}"},
        "custom_text": lambda r: {"body": f"{user(r)} {answer(r)}"},
        "prompt_completion": lambda r: {"prompt": user(r), "completion": answer(r)},
        "conversational_prompt_completion": lambda r: {
            "prompt": [{"role": "user", "content": user(r)}],
            "completion": [{"role": "assistant", "content": answer(r)}],
        },
        "from_value": lambda r: {
            "conversations": [{"from": "user", "value": user(r)}, {"from": "assistant", "value": answer(r)}]
        },
        "tokens": lambda r: {"input_ids": TOKENIZER(f"{user(r)} {answer(r)}")["input_ids"]},
        "qa": lambda r: {"question": user(r), "answer": answer(r)},
    }
    make = makers[kind]
    return POOL if make is None else POOL.map(make, remove_columns=POOL.column_names)


def model():
    return build_tiny_model(TOKENIZER, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, seed=0)


class Run:
    """One scenario run with one pair of classes."""

    def __init__(self, trainer_cls, config_cls, folder):
        self.trainer_cls, self.config_cls, self.folder = trainer_cls, config_cls, folder
        self.lead = trainer_cls is LEADSFTTrainer

    def config(self, **settings):
        values = dict(
            output_dir=os.path.join(self.folder, "out"),
            report_to="none",
            use_cpu=True,
            bf16=False,
            max_steps=2,
            per_device_train_batch_size=2,
            per_device_eval_batch_size=2,
            logging_steps=1,
            save_strategy="no",
            max_length=64,
            seed=0,
        )
        values.update(settings)
        return self.config_cls(**values)

    def trainer(self, train_dataset="messages", config=None, **kwargs):
        if isinstance(train_dataset, str):
            train_dataset = rows(train_dataset)
        kwargs.setdefault("model", model())
        return self.trainer_cls(
            args=config or self.config(), train_dataset=train_dataset, processing_class=TOKENIZER, **kwargs
        )

    def trains(self, train_dataset="messages", steps=2, **kwargs):
        trainer = self.trainer(train_dataset, **kwargs)
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        assert trainer.state.global_step == steps, f"{trainer.state.global_step} steps, expected {steps}"
        assert losses and all(math.isfinite(x) for x in losses), f"losses {losses}"
        return trainer


def raises(fn, match: str):
    try:
        fn()
    except Exception as error:  # noqa: BLE001 - the scenario checks the message
        assert match in str(error), f"raised {type(error).__name__}: {error}"
        return
    raise AssertionError(f"did not raise ({match!r} expected)")


# ----- scenarios: each takes a Run ----------------------------------------------------------------------------------


def format_language_modeling(r):
    r.trains("text")


def format_dataset_text_field(r):
    r.trains("custom_text", config=r.config(dataset_text_field="body"))


def format_prompt_completion(r):
    r.trains("prompt_completion")


def format_conversational(r):
    r.trains("messages")


def format_conversational_prompt_completion(r):
    r.trains("conversational_prompt_completion")


def format_conversations_from_value(r):
    r.trains("from_value")


def format_pretokenized(r):
    r.trains("tokens")


def format_formatting_func(r):
    r.trains("qa", formatting_func=lambda e: f"### Question: {e['question']}\n ### Answer: {e['answer']}")


def assistant_only_loss(r):
    r.trains(config=r.config(assistant_only_loss=True))


def completion_only_loss_off(r):
    r.trains("prompt_completion", config=r.config(completion_only_loss=False))


def padding_free(r):
    r.trains(config=r.config(padding_free=True, max_length=None))


def pad_to_multiple_of(r):
    r.trains(config=r.config(pad_to_multiple_of=8))


def packing_bfd(r):
    r.trains("text", config=r.config(packing=True, max_length=32))


def packing_seq_lengths(r):
    trainer = r.trains("text", config=r.config(packing=True, max_length=32))
    sequences = sum(len(lengths) for lengths in trainer.train_dataset["seq_lengths"])
    assert sequences == len(POOL), (sequences, len(POOL))  # every sample, packed or one per row


def eval_packing_false(r):
    trainer = r.trains(
        "text",
        config=r.config(packing=True, eval_packing=False, max_length=32, eval_strategy="steps", eval_steps=1),
        eval_dataset=rows("text").select(range(6)),
    )
    assert "seq_lengths" in trainer.train_dataset.column_names
    assert "seq_lengths" not in trainer.eval_dataset.column_names and len(trainer.eval_dataset) == 6


def packing_wrapped(r):
    if r.lead:  # deliberate: wrapped packing cuts samples, LEAD refuses it with the reason
        raises(lambda: r.config(packing=True, packing_strategy="wrapped"), "packing_strategy='wrapped'")
    else:
        r.trains("text", config=r.config(packing=True, packing_strategy="wrapped", max_length=32))


def packing_with_eval(r):
    r.trains(
        "text",
        config=r.config(packing=True, max_length=32, eval_strategy="steps", eval_steps=1),
        eval_dataset=rows("text").select(range(6)),
    )


def eval_dataset_steps(r):
    trainer = r.trains(config=r.config(eval_strategy="steps", eval_steps=1), eval_dataset=HELD_OUT)
    assert [h["step"] for h in trainer.state.log_history if "eval_loss" in h] == [1, 2]


def eval_steps_log_shape(r):  # no step logged (logging_steps > max_steps): the evaluations come first
    trainer = r.trainer(config=r.config(eval_strategy="steps", eval_steps=1, logging_steps=10), eval_dataset=HELD_OUT)
    trainer.train()
    assert "eval_loss" in trainer.state.log_history[0], trainer.state.log_history[0]
    assert [h["step"] for h in trainer.state.log_history] == [1, 2, 2]  # two evaluations, then the summary


def eval_dict(r):
    trainer = r.trains(
        config=r.config(eval_strategy="steps", eval_steps=2),
        eval_dataset={"x": HELD_OUT, "y": HELD_OUT.select(range(4))},
    )
    keys = {k for h in trainer.state.log_history for k in h}
    assert {"eval_x_loss", "eval_y_loss"} <= keys, keys


def evaluate_after_training(r):
    trainer = r.trains(eval_dataset=HELD_OUT)
    assert math.isfinite(trainer.evaluate()["eval_loss"])
    assert math.isfinite(trainer.evaluate(rows("prompt_completion").select(range(4)))["eval_loss"])


def evaluate_before_training(r):
    trainer = r.trainer(eval_dataset=HELD_OUT)
    assert math.isfinite(trainer.evaluate()["eval_loss"])


def evaluate_iterable(r):
    trainer = r.trains(eval_dataset=HELD_OUT)
    iterable = IterableDataset.from_generator(lambda: iter(HELD_OUT))
    assert math.isfinite(trainer.evaluate(iterable)["eval_loss"])


def compute_metrics(r):
    trainer = r.trains(
        config=r.config(eval_strategy="steps", eval_steps=2),
        eval_dataset=HELD_OUT,
        compute_metrics=lambda p: {"rows": float(len(p.predictions))},
    )
    assert [h["eval_rows"] for h in trainer.state.log_history if "eval_rows" in h] == [len(HELD_OUT)]


def best_model_at_end(r):
    config = r.config(
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
    )
    trainer = r.trains(config=config, eval_dataset=HELD_OUT)
    assert trainer.state.best_model_checkpoint is not None


def predict(r):
    trainer = r.trains(eval_dataset=HELD_OUT)
    output = trainer.predict(trainer.eval_dataset)  # `predict` takes a processed dataset (it does not prepare one)
    assert math.isfinite(output.metrics["test_loss"])


def lora(r):
    from peft import LoraConfig

    trainer = r.trains(peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    assert all("lora_" in n for n, p in trainer.model.named_parameters() if p.requires_grad)


def prompt_tuning(r):
    from peft import PromptTuningConfig, TaskType

    r.trains(peft_config=PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4))


def prompt_tuning_log(r):  # the last entry (the summary) carries the metrics of the steps after the last log
    from peft import PromptTuningConfig, TaskType

    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4)
    trainer = r.trainer(config=r.config(logging_steps=10), peft_config=config)
    trainer.train()
    assert "mean_token_accuracy" in trainer.state.log_history[-1], trainer.state.log_history[-1]


def prompt_tuning_peft_model_log(r):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    peft_model = get_peft_model(model(), PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4))
    trainer = r.trainer(config=r.config(logging_steps=10), model=peft_model)
    trainer.train()
    assert "mean_token_accuracy" in trainer.state.log_history[-1], trainer.state.log_history[-1]


def moe_aux_loss_log(r):
    trainer = r.trainer(config=r.config(logging_steps=10), model=build_tiny_moe_model(TOKENIZER))
    trainer.train()
    assert "aux_loss" in trainer.state.log_history[-1], trainer.state.log_history[-1]


def gradient_checkpointing(r):
    r.trains(config=r.config(gradient_checkpointing=True))


def dft_loss(r):
    r.trains(config=r.config(loss_type="dft"))


def label_smoothing(r):
    r.trains(config=r.config(label_smoothing_factor=0.1))


def neftune(r):
    r.trains(config=r.config(neftune_noise_alpha=5.0))


def gradient_accumulation(r):
    r.trains(config=r.config(gradient_accumulation_steps=2))


def shuffle_dataset(r):
    r.trains(config=r.config(shuffle_dataset=True))


def truncation_drops_masked_rows(r):
    long_prompt = {"prompt": "x" * 80, "completion": "y"}
    data = Dataset.from_list([{"prompt": user(e), "completion": answer(e)} for e in POOL] + [long_prompt] * 3)
    trainer = r.trains(data, config=r.config(max_length=40))
    assert len(trainer.train_dataset) == len(POOL)  # the three fully masked rows are dropped


def num_train_epochs(r):
    config = r.config(max_steps=-1, num_train_epochs=1)
    trainer = r.trainer(config=config)
    trainer.train()
    if r.lead:  # deliberate: an epoch counts passes over the budget, one round per epoch here
        settings = trainer.lead_settings
        expected = math.ceil(settings.budget / settings.round_size) * math.ceil(settings.round_size / 2)
    else:
        expected = math.ceil(len(POOL) / 2)
    assert trainer.state.global_step == expected, (trainer.state.global_step, expected)


def two_row_dataset(r):
    r.trains(POOL.select(range(2)))


def five_row_dataset(r):
    r.trains(POOL.select(range(5)))


def masked_rows_leave_two(r):
    data = Dataset.from_list([{"prompt": user(e), "completion": answer(e)} for e in POOL.select(range(2))])
    data = concatenate_datasets([data, Dataset.from_list([{"prompt": "x" * 80, "completion": "y"}] * 2)])
    trainer = r.trains(data, config=r.config(max_length=40))
    assert len(trainer.train_dataset) == 2  # the two fully masked rows are dropped


def schedule_ends_at_zero(r):
    # SFTTrainer: the linear schedule reaches 0 at `max_steps`. LEAD on this 24-row pool: the default budget (one
    # sample, trained at most 4 times) fills 4 of the 6 steps; the run stops there, its schedule planned for 4
    trainer = r.trainer(config=r.config(max_steps=6))
    trainer.train()
    assert trainer.state.global_step == trainer.state.max_steps == (4 if r.lead else 6), trainer.state.global_step
    assert trainer.lr_scheduler.get_last_lr()[0] == 0.0, trainer.lr_scheduler.get_last_lr()


def save_and_resume(r):
    config = r.config(max_steps=4, save_strategy="steps", save_steps=2)
    r.trains(config=config, steps=4)
    trainer = r.trainer(config=config)
    trainer.train(resume_from_checkpoint=os.path.join(config.output_dir, "checkpoint-2"))
    assert trainer.state.global_step == 4


def model_by_path(r):
    path = os.path.join(r.folder, "model")
    model().save_pretrained(path)
    TOKENIZER.save_pretrained(path)
    r.trains(model=path)


def missing_train_dataset(r):
    raises(
        lambda: r.trainer_cls(model=model(), args=r.config(), processing_class=TOKENIZER),
        "`train_dataset` is required",
    )


def iterable_train_dataset(r):
    iterable = IterableDataset.from_generator(lambda: iter(POOL))
    if r.lead:  # deliberate: LEAD selects from a pool of known size
        raises(lambda: r.trainer(iterable), "pool of known size")
    else:
        r.trains(iterable)


SCENARIOS = {
    name: fn
    for name, fn in globals().items()
    if callable(fn) and fn.__module__ == __name__ and name not in {"user", "answer", "rows", "model", "raises", "Run"}
}
DELIBERATE = {"packing_wrapped", "num_train_epochs", "iterable_train_dataset"}


def main(names: list[str]) -> None:
    names = names or list(SCENARIOS)
    results = {}
    for name in names:
        for label, classes in (
            ("SFTTrainer", (SFTTrainer, SFTConfig)),
            ("LEADSFTTrainer", (LEADSFTTrainer, LEADConfig)),
        ):
            with tempfile.TemporaryDirectory() as folder:
                os.environ["TRL_LEAD_CACHE"] = os.path.join(folder, "cache")
                try:
                    SCENARIOS[name](Run(*classes, folder))
                    results[name, label] = "pass"
                except Exception as error:  # noqa: BLE001 - reported
                    results[name, label] = f"FAIL {type(error).__name__}: {str(error)[:150]}"
                    traceback.print_exc(limit=3, file=sys.stderr)
            print(f"{name:40s} {label:15s} {results[name, label]}", file=sys.stderr, flush=True)
    print("| scenario | SFTTrainer | LEADSFTTrainer |\n|---|---|---|")
    for name in names:
        note = " (deliberate difference: LEAD's own behaviour checked)" if name in DELIBERATE else ""
        print(f"| `{name}`{note} | {results[name, 'SFTTrainer']} | {results[name, 'LEADSFTTrainer']} |")
    passed = {label: sum(results[n, label] == "pass" for n in names) for label in ("SFTTrainer", "LEADSFTTrainer")}
    both = sum(results[n, "SFTTrainer"] == "pass" and results[n, "LEADSFTTrainer"] == "pass" for n in names)
    print(
        f"\nSFTTrainer passes {passed['SFTTrainer']}/{len(names)}, LEADSFTTrainer {passed['LEADSFTTrainer']}/"
        f"{len(names)}; of SFTTrainer's passes, LEADSFTTrainer passes {both} "
        f"({100 * both / max(passed['SFTTrainer'], 1):.0f}%)."
    )


if __name__ == "__main__":
    main(sys.argv[1:])
