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
from trl_lead.embedded import build_tiny_moe_model

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


SHARED = dict(COMMON, save_strategy="no", max_length=64, learning_rate=0.0, max_steps=4)


def lead_config(tmp_path, **settings) -> LEADConfig:
    """The default LEAD settings (computed clusters) on a small pool: 2 rounds of 8 samples, 2 steps each."""
    values = dict(SHARED, output_dir=str(tmp_path / "out"), lead_round_size=8, lead_budget=0.5)
    values.update(settings)
    return LEADConfig(**values)


# Given clusters and no scoring pass, for tests of what does not depend on how the clusters were computed
GIVEN_CLUSTERS = dict(
    lead_cluster_column="family_id",
    lead_initial_score="none",
    lead_sample_filter="none",
    lead_filter_groups="clusters",
)


def both_configs(tmp_path, **settings) -> tuple[SFTConfig, LEADConfig]:
    """SFTTrainer's config and LEADSFTTrainer's (`lead_config`) with the same `settings`."""
    values = dict(SHARED, output_dir=str(tmp_path / "sft"))
    values.update({k: v for k, v in settings.items() if not k.startswith("lead_")})
    return SFTConfig(**values), lead_config(tmp_path, **settings)


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
        selector = trainer.lead_selector if trainer.lead_state is not None else None
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
                self._wrap(trainer.lead_selector)

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
    assert len(clusters) == min(trainer.args.lead_num_clusters, len(state))  # a smaller pool: one per sample
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
    assert trainer.lead_run.losses.batches == []


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


# ----- the same log, datasets and run length as SFTTrainer ----------------------------------------------------------
def prompt_tuning():
    from peft import PromptTuningConfig, TaskType

    return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4)


def prompt_tuned(model):
    from peft import get_peft_model

    return get_peft_model(model, prompt_tuning())


MODELS = {
    # name: (model builder, trainer kwargs, evaluation on, keys SFTTrainer's last entry has)
    "dense": (lambda make_model, tokenizer: make_model(), {}, True, set()),
    # without evaluation, the last entry (the summary) carries the metrics of the steps after the last log
    "moe": (lambda _, tokenizer: build_tiny_moe_model(tokenizer), {}, False, {"aux_loss", "mean_token_accuracy"}),
    "prompt-tuning": (
        lambda make_model, tokenizer: make_model(),
        {"peft_config": prompt_tuning()},
        False,
        {"mean_token_accuracy"},
    ),
    "prompt-tuning-model": (
        lambda make_model, tokenizer: prompt_tuned(make_model()),
        {},
        False,
        {"mean_token_accuracy"},
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_log_history_has_sft_trainers_entries(tmp_path, small_pool, tokenizer, make_model, monkeypatch, name):
    """`log_history` has SFTTrainer's entries with the same keys, logging steps not being round ends, plus on each
    training entry the `lead/*` metrics of the last round finished since the training entry before it;
    `lead_rounds.jsonl` has every round."""
    monkeypatch.setenv("TRL_LEAD_CACHE", str(tmp_path / "cache"))
    build, kwargs, evaluation, last_keys = MODELS[name]
    settings = dict(GIVEN_CLUSTERS, logging_steps=3, max_steps=4, lead_round_size=4)  # rounds of one step
    if evaluation:
        settings.update(eval_strategy="steps", eval_steps=2)
    sft_args, lead_args = both_configs(tmp_path, **settings)
    runs = []
    for trainer_cls, args in ((SFTTrainer, sft_args), (LEADSFTTrainer, lead_args)):
        trainer = trainer_cls(
            model=build(make_model, tokenizer),
            args=args,
            train_dataset=small_pool,
            eval_dataset=small_pool.select(range(4)) if evaluation else None,
            processing_class=tokenizer,
            **kwargs,
        )
        trainer.train()
        runs.append(trainer.state.log_history)
    theirs, ours = runs
    assert [set(h) for h in theirs] == [{k for k in h if not k.startswith("lead/")} for h in ours]
    if evaluation:  # eval at 2 and 4 (the last step); training entries at 3 and the summary
        assert [h["step"] for h in ours] == [2, 3, 4, 4] and "eval_loss" in ours[0]
    else:
        assert [h["step"] for h in ours] == [3, 4] and last_keys <= set(ours[-1])
    with open(tmp_path / "out" / "lead_rounds.jsonl") as f:
        rounds = [json.loads(line) for line in f]
    assert [(r["round"], r["step"]) for r in rounds] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    training = [h for h in ours if "loss" in h or "train_loss" in h]
    assert [h.get("lead/round") for h in training] == [2, 3]
    for entry in training:
        record = rounds[entry["lead/round"]]
        assert entry["lead/reward"] == record["reward"] and entry["lead/selected"] == record["selected"]


def test_moe_loss_has_the_aux_loss_as_sft_trainer_adds_it(tmp_path, small_pool, tokenizer, monkeypatch):
    """On one training batch, LEAD's loss equals SFTTrainer's and the model's own (token mean of the NLL plus
    `router_aux_loss_coef` times the router's aux loss) to 1e-6."""
    monkeypatch.setenv("TRL_LEAD_CACHE", str(tmp_path / "cache"))
    sft_args, lead_args = both_configs(tmp_path, max_steps=1)
    model = build_tiny_moe_model(tokenizer)
    sft = SFTTrainer(model=model, args=sft_args, train_dataset=small_pool, processing_class=tokenizer)
    lead = LEADSFTTrainer(model=model, args=lead_args, train_dataset=small_pool, processing_class=tokenizer)
    batch = lead.data_collator([lead.train_dataset[i] for i in range(4)])
    assert "lead_id" in batch
    model.train()
    with torch.no_grad():
        ours = float(lead.compute_loss(model, dict(batch)))
        theirs = float(sft.compute_loss(model, {k: v for k, v in batch.items() if k != "lead_id"}))
        inputs = {k: v for k, v in batch.items() if k != "lead_id"}
        outputs = model(**inputs, output_router_logits=True)  # transformers' loss: NLL + coef * aux
        aux = float(outputs.aux_loss)
    assert model.config.router_aux_loss_coef * aux > 1e-3  # large enough to be seen
    assert ours == pytest.approx(theirs, abs=1e-6) and ours == pytest.approx(float(outputs.loss), abs=1e-6)
    lead.lead_run.losses.clear()


def test_packing_gives_each_row_its_sequence_lengths(tmp_path, small_pool, tokenizer, make_model, monkeypatch):
    """Packed like TRL's rows, each pool row lists the lengths of the sequences it holds: its one sample, so the
    count of sequences is the count of rows; the evaluation set is packed, or not, exactly as SFTTrainer's."""
    monkeypatch.setenv("TRL_LEAD_CACHE", str(tmp_path / "cache"))
    held_out = small_pool.select(range(8))
    for eval_packing in (False, None):
        sft_args, lead_args = both_configs(tmp_path, packing=True, eval_packing=eval_packing)
        trainers = [
            cls(model=make_model(), args=args, train_dataset=small_pool, eval_dataset=held_out, processing_class=tok)
            for cls, args, tok in ((SFTTrainer, sft_args, tokenizer), (LEADSFTTrainer, lead_args, tokenizer))
        ]
        sft, lead = trainers
        pool = lead.train_dataset
        assert pool["seq_lengths"] == [[len(ids)] for ids in pool["input_ids"]]
        assert sum(map(len, pool["seq_lengths"])) == len(pool) == len(small_pool)
        # SFTTrainer's packed rows hold the same sequences, several to a row
        assert sorted(n for row in sft.train_dataset["seq_lengths"] for n in row) == sorted(
            map(len, pool["input_ids"])
        )
        columns = ["input_ids", "seq_lengths"] if eval_packing is None else ["input_ids"]
        assert ("seq_lengths" in lead.eval_dataset.column_names) == (eval_packing is None)
        assert (
            lead.eval_dataset.select_columns(columns).to_list() == sft.eval_dataset.select_columns(columns).to_list()
        )


def small_pool_rows(pool, tokenizer, name: str) -> Dataset:
    if name == "2 rows":
        return pool.select(range(2))
    if name == "5 rows":
        return pool.select(range(5))
    # 4 rows, 2 of them a prompt longer than max_length: TRL drops them (fully masked), 2 trainable samples are left
    long_prompt = [{"role": "user", "content": "x" * 90}, {"role": "assistant", "content": "y"}]
    rows = [pool[0]["messages"], long_prompt, pool[1]["messages"], long_prompt]
    return Dataset.from_list([{"messages": m} for m in rows])


@pytest.mark.parametrize("name", ["2 rows", "5 rows", "2 of 4 rows trainable"])
def test_small_pools_use_one_cluster_per_sample(tmp_path, pool, tokenizer, make_model, monkeypatch, caplog, name):
    """Fewer trainable samples than `lead_num_clusters` (7): as many clusters as samples, with a warning."""
    monkeypatch.setenv("TRL_LEAD_CACHE", str(tmp_path / "cache"))
    data = small_pool_rows(pool, tokenizer, name)
    samples = 5 if name == "5 rows" else 2
    # LEAD's default sizes: rounds and budget of one sample, which trains at most 4 times
    args = lead_config(tmp_path, assistant_only_loss=True, max_steps=3, lead_round_size=0.01, lead_budget=0.025)
    with caplog.at_level(logging.WARNING, logger="trl_lead.trainer"):
        trainer = LEADSFTTrainer(model=make_model(), args=args, train_dataset=data, processing_class=tokenizer)
    assert f"`lead_num_clusters=7` is more than the {samples} trainable samples; computing {samples}" in caplog.text
    spy = Spy(trainer)
    trainer.train()
    assert trainer.state.global_step == 3 and len(trainer.lead_state) == samples
    check_trains_and_records(trainer, spy, rounds=3)
    check_clusters(trainer, "ifd")  # one cluster per sample


SCHEDULES = {"linear": lambda t: 1 - t, "cosine": lambda t: 0.5 * (1 + math.cos(math.pi * t))}


@pytest.mark.parametrize(
    "asked, schedule",
    [({"max_steps": 20}, "linear"), ({"max_steps": -1, "num_train_epochs": 3}, "cosine")],
    ids=["max_steps", "num_train_epochs"],
)
def test_a_run_the_budget_cannot_fill_warns_and_anneals(
    tmp_path, small_pool, tokenizer, make_model, monkeypatch, caplog, asked, schedule
):
    """A budget of 4 samples trained at most twice fills 8 sample visits: 2 rounds of 4 in 2 steps of 2, fewer than
    asked (20 steps; 3 passes over the budget, 6 steps). The warning says so before training; the run makes 4 steps
    with the schedule planned for 4, so its learning rate ends at 0; the user's config is left as it was."""
    monkeypatch.setenv("TRL_LEAD_CACHE", str(tmp_path / "cache"))
    settings = dict(GIVEN_CLUSTERS, lead_round_size=4, lead_budget=4, lead_max_reuse=2, per_device_train_batch_size=2)
    args = lead_config(tmp_path, learning_rate=1e-3, lr_scheduler_type=schedule, **settings, **asked)
    with caplog.at_level(logging.WARNING, logger="trl_lead.trainer"):
        trainer = LEADSFTTrainer(model=make_model(), args=args, train_dataset=small_pool, processing_class=tokenizer)
    fix = "`max_steps=4`" if "num_train_epochs" not in asked else "lower `num_train_epochs` to 2"
    assert "training stops at step 4" in caplog.text and "raise `lead_max_reuse`" in caplog.text
    assert fix in caplog.text and trainer.lead_max_steps == 4
    trainer.train()
    assert trainer.state.global_step == trainer.state.max_steps == 4
    rates = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    np.testing.assert_allclose(rates, [1e-3 * SCHEDULES[schedule](t / 4) for t in range(4)], rtol=1e-6)
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
    assert (args.max_steps, args.num_train_epochs) == (asked["max_steps"], asked.get("num_train_epochs", 3.0))
    assert int(trainer.lead_state.use_count.sum()) == 8 and trainer.lead_state.use_count.max() == 2


def test_short_rounds_are_trained_once_each(tmp_path, small_pool, tokenizer, make_model, monkeypatch):
    """Rounds the budget and reuse cap leave short (a budget of 2 samples, rounds of 3) end their Trainer epochs
    early: each is still one epoch, trained once, and the run ends at the budget's steps, 2 rounds of 2 samples at
    one sample per step, every visit trained."""
    monkeypatch.setenv("TRL_LEAD_CACHE", str(tmp_path / "cache"))
    settings = dict(lead_round_size=3, lead_budget=2, lead_max_reuse=2, per_device_train_batch_size=1)
    args = lead_config(tmp_path, max_steps=40, **GIVEN_CLUSTERS, **settings)
    trainer = LEADSFTTrainer(model=make_model(), args=args, train_dataset=small_pool, processing_class=tokenizer)
    spy = Spy(trainer)
    trainer.train()
    assert [len(planned) for planned in spy.planned] == [2, 2]
    assert trainer.state.global_step == trainer.lead_max_steps == 4
    check_trains_and_records(trainer, spy, rounds=2)
    assert trainer.lead_state.use_count.max() == 2
