"""LEADSFTTrainer as a drop-in for SFTTrainer: every dataset format, evaluation, packing and LoRA, with the default
LEADConfig (no cluster column). Each run checks that the samples of every planned round, and only those, are trained
(their processed tokens reach the model) and that the recorded IU is each sample's own loss; each computed clustering
is checked against features computed independently, sample by sample."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from datasets import Dataset, IterableDataset
from test_trainer import reference_iu
from trl import SFTConfig, SFTTrainer

from trl_lead import LEADConfig, LEADSFTTrainer
from trl_lead.clustering import PROMPT_GROUP_SIZE

pytestmark = pytest.mark.numerics

COMMON = dict(
    report_to="none",
    use_cpu=True,
    bf16=False,
    logging_steps=1,
    seed=0,
    dataloader_num_workers=0,
    per_device_train_batch_size=4,
    per_device_eval_batch_size=4,
)


def lead_config(tmp_path, **settings) -> LEADConfig:
    """The default LEAD settings (computed clusters) on a small pool: 2 rounds of 8 samples, 2 steps each."""
    values = dict(
        COMMON,
        output_dir=str(tmp_path / "out"),
        save_strategy="no",
        max_length=64,
        learning_rate=0.0,
        max_steps=4,
        lead_round_size=8,
        lead_budget=0.5,
    )
    values.update(settings)
    return LEADConfig(**values)


@pytest.fixture
def small_pool(pool):
    return pool.select(range(48))


def user(row):
    return row["messages"][0]["content"]


def answer(row):
    return row["messages"][1]["content"]


def as_format(dataset: Dataset, name: str, tokenizer) -> Dataset:
    """The same rows in another of the formats SFTTrainer accepts."""
    if name == "prompt-completion":
        make = lambda row: {"prompt": user(row), "completion": answer(row)}  # noqa: E731
    elif name == "language-modeling":
        make = lambda row: {"text": f"{user(row)} {answer(row)}"}  # noqa: E731
    elif name == "conversations-from-value":  # ShareGPT-style keys, which TRL converts to `messages`
        make = lambda row: {  # noqa: E731
            "conversations": [{"from": "user", "value": user(row)}, {"from": "assistant", "value": answer(row)}]
        }
    elif name == "pre-tokenized":
        make = lambda row: {"input_ids": tokenizer(f"{user(row)} {answer(row)}")["input_ids"]}  # noqa: E731
    else:
        return dataset
    return dataset.map(make, remove_columns=dataset.column_names)


class Spy:
    """Records every planned round, every trained batch (ids and tokens) and every round's recorded (id, IU)."""

    def __init__(self, trainer):
        self.planned, self.trained, self.finished = [], [], []
        selector = trainer._lead_selector if trainer.lead_state is not None else None
        self.trainer = trainer
        compute_loss = trainer.compute_loss

        def spy_loss(model, inputs, *args, **kwargs):
            if model.training:
                ids = inputs["lead_id"].tolist()
                self.trained.append((ids, {k: v.clone() for k, v in inputs.items() if torch.is_tensor(v)}))
            return compute_loss(model, inputs, *args, **kwargs)

        trainer.compute_loss = spy_loss
        if selector is None:  # computed clusters: the selector exists once rounds start
            start = trainer._start_rounds

            def spy_start():
                start()
                self._wrap(trainer._lead_selector)

            trainer._start_rounds = spy_start
        else:
            self._wrap(selector)

    def _wrap(self, selector):
        plan, finish = selector.plan_round, selector.finish_round

        def spy_plan():
            planned = plan()
            self.planned.append(planned.sample_ids.tolist())
            return planned

        def spy_finish(planned, ids, losses, **kwargs):
            self.finished.append(dict(zip(ids.tolist(), losses.tolist())))
            return finish(planned, ids, losses, **kwargs)

        selector.plan_round, selector.finish_round = spy_plan, spy_finish


def check_trains_and_records(trainer: LEADSFTTrainer, spy: Spy, rounds: int = 2) -> None:
    """Every planned round is trained, sample by sample, and only its samples' IU are recorded, each its own loss."""
    dataset = trainer.train_dataset
    row_of = {int(i): r for r, i in enumerate(dataset["lead_id"])}
    assert len(spy.planned) == len(spy.finished) == rounds
    trained_ids = [i for ids, _ in spy.trained for i in ids]
    assert trained_ids == [i for planned in spy.planned for i in planned]  # the planned samples, in order, once
    for planned, finished in zip(spy.planned, spy.finished):
        assert sorted(finished) == sorted(planned)  # one IU per trained sample, nothing from evaluation
    for ids, inputs in spy.trained:  # the batch holds exactly these samples' processed tokens
        rows = [dataset[row_of[i]]["input_ids"] for i in ids]
        if "position_ids" in inputs:  # padding-free / packed: one row, positions restart at every sample
            flat = inputs["input_ids"][0].tolist()
            assert flat[: sum(map(len, rows))] == [t for row in rows for t in row]
            assert int((inputs["position_ids"][0, : sum(map(len, rows))] == 0).sum()) == len(ids)
        else:
            for r, row in enumerate(rows):
                assert inputs["input_ids"][r, : len(row)].tolist() == row
    # learning_rate=0: the model after training is the one every loss was measured on
    recorded = {i: loss for finished in spy.finished for i, loss in finished.items()}
    ids = sorted(recorded)
    np.testing.assert_allclose(
        [recorded[i] for i in ids], reference_iu(trainer.model, dataset, ids), atol=1e-5, rtol=0
    )
    lines = (trainer.args.output_dir + "/lead_rounds.jsonl").strip()
    with open(lines) as f:
        assert [json.loads(line)["sample_ids"] for line in f] == spy.planned


def alone_loss(model, dataset, ids, bos_id: int) -> np.ndarray:
    """Mean NLL of each sample's trained tokens scored alone, after BOS: IFD's denominator, one sample at a time."""
    rows = {int(i): r for r, i in enumerate(dataset["lead_id"])}
    out = []
    with torch.no_grad():
        for i in ids:
            row = dataset[rows[int(i)]]
            labels = row.get("labels") or row["input_ids"]
            answer_ids = [t for t, label in zip(row["input_ids"][1:], labels[1:]) if label != -100]
            input_ids = torch.tensor([[bos_id, *answer_ids]])
            logits = model(input_ids=input_ids).logits[0, :-1].double()
            nll = -torch.log_softmax(logits, -1).gather(1, input_ids[0, 1:, None])[:, 0]
            out.append(float(nll.mean()))
    return np.array(out)


def check_clusters(trainer: LEADSFTTrainer, feature: str) -> None:
    """The computed clusters are 1-D k-means intervals of the stated feature, computed here sample by sample."""
    assert trainer.lead_clustering["feature"] == feature
    with open(trainer.args.output_dir + "/lead_rounds.jsonl") as f:
        assert json.loads(f.readline())["pool"]["clusters"]["feature"] == feature  # the round log says which
    state = trainer.lead_state
    ids = np.arange(len(state))
    loss = reference_iu(trainer.model, trainer.train_dataset, ids)
    np.testing.assert_allclose(state.initial_iu, loss, atol=1e-5, rtol=0)  # the one scoring pass
    if feature == "ifd":
        values = loss / alone_loss(trainer.model, trainer.train_dataset, ids, trainer.processing_class.bos_token_id)
    else:
        values = loss
    clusters = np.unique(state.cluster)
    assert len(clusters) == trainer.args.lead_num_clusters
    for low, high in zip(clusters[:-1], clusters[1:]):  # numbered by increasing centre, no overlap
        assert values[state.cluster == low].max() <= values[state.cluster == high].min() + 1e-4


FORMATS = {
    # name: (LEADConfig settings, the feature the default clustering must use)
    "conversational": ({"assistant_only_loss": True}, "ifd"),
    "prompt-completion": ({}, "ifd"),
    "language-modeling": ({}, "initial_loss"),
    "conversations-from-value": ({}, "initial_loss"),  # every token trained: no prompt
    "pre-tokenized": ({}, "initial_loss"),
    "formatting_func": ({}, "initial_loss"),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_dataset_format_trains_the_selected_samples(
    tmp_path, small_pool, tokenizer, make_model, monkeypatch, caplog, name
):
    monkeypatch.setenv("TRL_LEAD_CACHE", str(tmp_path / "cache"))
    settings, feature = FORMATS[name]
    kwargs = {"formatting_func": lambda row: f"{user(row)} {answer(row)}"} if name == "formatting_func" else {}
    with caplog.at_level(logging.WARNING, logger="trl_lead.trainer"):
        trainer = LEADSFTTrainer(
            model=make_model(),
            args=lead_config(tmp_path, **settings),
            train_dataset=as_format(small_pool, name, tokenizer),
            processing_class=tokenizer,
            **kwargs,
        )
    spy = Spy(trainer)
    trainer.train()
    check_trains_and_records(trainer, spy)
    check_clusters(trainer, feature)
    # The small-loss filter compares within groups of similar prompts where every sample has a prompt (IFD's
    # condition too); otherwise it warns, before training, and compares within the clusters
    groups = trainer.lead_state.filter_group
    fell_back = "compares within clusters instead" in caplog.text
    if feature == "ifd":
        assert not fell_back and groups is not None
        assert len(np.unique(groups)) == math.ceil(len(small_pool) / PROMPT_GROUP_SIZE)
    else:
        assert fell_back and groups is None


def test_packing_keeps_samples_whole_with_one_loss_each(tmp_path, small_pool, tokenizer, make_model, monkeypatch):
    monkeypatch.setenv("TRL_LEAD_CACHE", str(tmp_path / "cache"))
    args = lead_config(tmp_path, packing=True, assistant_only_loss=True)
    trainer = LEADSFTTrainer(model=make_model(), args=args, train_dataset=small_pool, processing_class=tokenizer)
    spy = Spy(trainer)
    trainer.train()
    assert all(inputs["input_ids"].shape[0] == 1 for _, inputs in spy.trained)  # each batch packed into one row
    check_trains_and_records(trainer, spy)
    check_clusters(trainer, "ifd")


def test_lora_with_computed_clusters(tmp_path, small_pool, tokenizer, make_model, monkeypatch):
    from peft import LoraConfig

    monkeypatch.setenv("TRL_LEAD_CACHE", str(tmp_path / "cache"))
    trainer = LEADSFTTrainer(
        model=make_model(),
        args=lead_config(tmp_path),
        train_dataset=as_format(small_pool, "prompt-completion", None),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    spy = Spy(trainer)
    trainer.train()
    check_trains_and_records(trainer, spy)
    check_clusters(trainer, "ifd")


def test_evaluation_during_and_after_training(tmp_path, pool, small_pool, tokenizer, make_model, monkeypatch):
    monkeypatch.setenv("TRL_LEAD_CACHE", str(tmp_path / "cache"))
    held_out = {"a": pool.select(range(100, 112)), "b": pool.select(range(112, 120))}
    calls = []

    def compute_metrics(prediction):
        calls.append(prediction.predictions.shape)
        return {"rows": float(len(prediction.predictions))}

    eval_settings = dict(eval_strategy="steps", eval_steps=2, metric_for_best_model="eval_a_loss")
    args = lead_config(
        tmp_path, learning_rate=1e-3, save_strategy="steps", save_steps=2, load_best_model_at_end=True, **eval_settings
    )
    trainer = LEADSFTTrainer(
        model=make_model(),
        args=args,
        train_dataset=small_pool,
        eval_dataset=held_out,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    spy = Spy(trainer)
    trainer.train()
    # Both eval sets at steps 2 and 4, with the user's metrics; the best checkpoint was picked from them
    evals = [h for h in trainer.state.log_history if "eval_a_loss" in h or "eval_b_loss" in h]
    assert [(h["step"], "eval_a_loss" in h) for h in evals] == [(2, True), (2, False), (4, True), (4, False)]
    assert all(np.isfinite(h.get("eval_a_rows", h.get("eval_b_rows"))) for h in evals)
    assert [h["eval_a_rows"] for h in evals if "eval_a_rows" in h] == [12, 12] and len(calls) == 4
    assert trainer.state.best_metric == min(h["eval_a_loss"] for h in evals if "eval_a_loss" in h)
    # Training saw the planned samples only; evaluation added no sample and no loss to LEAD
    assert [i for ids, _ in spy.trained for i in ids] == [i for planned in spy.planned for i in planned]
    assert [sorted(f) for f in spy.finished] == [sorted(p) for p in spy.planned]
    assert int(trainer.lead_state.use_count.sum()) == 16
    # After training: evaluate() on the trainer's sets and on a raw dataset equals SFTTrainer's on the same model
    state_before = {k: np.copy(v) for k, v in trainer.lead_state.state_dict().items()}
    sft = SFTTrainer(
        model=trainer.model,
        args=SFTConfig(**dict(COMMON, output_dir=str(tmp_path / "sft"), max_length=64)),
        train_dataset=small_pool,
        eval_dataset=held_out,
        processing_class=tokenizer,
    )
    for eval_dataset in (None, held_out["b"]):
        ours, theirs = trainer.evaluate(eval_dataset), sft.evaluate(eval_dataset)
        keys = [k for k in theirs if k.endswith("_loss")]
        assert keys and all(ours[k] == pytest.approx(theirs[k], rel=1e-6) for k in keys)
    for key, value in trainer.lead_state.state_dict().items():
        np.testing.assert_array_equal(value, state_before[key])
    assert trainer._lead_losses.batches == []


def test_rows_without_trained_tokens_are_dropped_like_trl(tmp_path, tokenizer, make_model, caplog, monkeypatch):
    monkeypatch.setenv("TRL_LEAD_CACHE", str(tmp_path / "cache"))
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    long_prompt = [{"role": "user", "content": "x" * 90}, {"role": "assistant", "content": "y"}]
    mixed = Dataset.from_list([{"messages": m} for m in [short, long_prompt] * 6])
    args = lead_config(
        tmp_path, assistant_only_loss=True, lead_round_size=2, lead_num_clusters=2, max_steps=2, lead_budget=1.0
    )
    with caplog.at_level(logging.WARNING, logger="trl_lead.trainer"):
        trainer = LEADSFTTrainer(model=make_model(), args=args, train_dataset=mixed, processing_class=tokenizer)
    assert "6 of 12 training rows have no trained token" in caplog.text
    np.testing.assert_array_equal(trainer.lead_pool_rows, [0, 2, 4, 6, 8, 10])
    assert len(trainer.train_dataset) == 6 and sorted(trainer.train_dataset["lead_id"]) == list(range(6))
    spy = Spy(trainer)
    trainer.train()
    check_trains_and_records(trainer, spy)
    with open(tmp_path / "out" / "lead_rounds.jsonl") as f:
        assert json.loads(f.readline())["pool"] == {
            "samples": 6,
            "dropped_rows": 6,
            "clusters": trainer.lead_clustering,
        }


def test_trl_errors_come_through_and_iterable_pools_are_refused(tmp_path, small_pool, tokenizer, make_model):
    with pytest.raises(ValueError, match="`train_dataset` is required"):  # TRL's own message
        LEADSFTTrainer(model=make_model(), args=lead_config(tmp_path), processing_class=tokenizer)
    iterable = IterableDataset.from_generator(lambda: iter(small_pool))
    with pytest.raises(ValueError, match="pool of known size"):
        LEADSFTTrainer(
            model=make_model(), args=lead_config(tmp_path), train_dataset=iterable, processing_class=tokenizer
        )
