"""LEADSFTTrainer inside TRL: equivalence with SFTTrainer, IU against a reference forward, round protocol, errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import CPU_TRAINING_ARGS, record_iu
from datasets import Dataset
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from trl_lead import LEADConfig, LEADSFTTrainer

COMMON = dict(
    **CPU_TRAINING_ARGS,
    logging_steps=1,
    seed=0,
    dataloader_num_workers=0,
)

# Asserts on trained models, statistics over seeds or float results: also run under the second kernels (README "Tests")
pytestmark = pytest.mark.numerics


def lead_args(tmp_path, **kwargs):
    settings = dict(COMMON, output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, learning_rate=1e-3)
    settings.update(lead_cluster_column="family_id", lead_round_size=8, lead_budget=0.5)
    settings.update(lead_initial_score="none", lead_sample_filter="none")  # no scoring pass: faster
    settings.update(kwargs)
    return LEADConfig(**settings)


def test_disabled_is_exactly_sft_trainer(tmp_path, pool, tokenizer, make_model):
    settings = dict(COMMON, per_device_train_batch_size=4, learning_rate=1e-3, max_steps=6)
    sft = SFTTrainer(
        model=make_model(),
        args=SFTConfig(output_dir=str(tmp_path / "a"), **settings),
        train_dataset=pool,
        processing_class=tokenizer,
    )
    sft.train()
    lead = LEADSFTTrainer(
        model=make_model(),
        args=LEADConfig(output_dir=str(tmp_path / "b"), lead_enabled=False, **settings),
        train_dataset=pool,
        processing_class=tokenizer,
    )
    lead.train()
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (sft, lead)]
    assert len(losses[0]) == 6 and losses[0] == losses[1]
    assert sft.state.global_step == lead.state.global_step == 6
    for a, b in zip(sft.model.parameters(), lead.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def reference_iu(model, dataset, ids) -> np.ndarray:
    """Mean NLL of each sample's trained tokens from its own full-logits forward (no fused head, no batching)."""
    per_sample = token_losses(model, dataset, ids)
    return np.array([float(-log_probs.gather(1, labels[:, None]).mean()) for log_probs, labels in per_sample])


@pytest.mark.parametrize("padding_free", [False, True])
def test_recorded_iu_equals_single_sample_forward(tmp_path, pool, tokenizer, make_model, padding_free):
    extra = {"padding_free": True, "max_length": None} if padding_free else {}
    args = lead_args(
        tmp_path,
        learning_rate=0.0,
        gradient_accumulation_steps=2,
        per_device_train_batch_size=3,
        lead_round_size=10,
        lead_max_reuse=1,  # no revisit: 20 distinct samples
        max_steps=4,
        **extra,
    )
    trainer = LEADSFTTrainer(model=make_model(), args=args, train_dataset=pool, processing_class=tokenizer)
    recorded = record_iu(trainer)
    trainer.train()
    assert len(recorded) == 20  # two rounds of 10 samples, every one recorded
    ids = sorted(recorded)
    expected = reference_iu(trainer.model, trainer.train_dataset, ids)
    np.testing.assert_allclose([recorded[i] for i in ids], expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(trainer.lead_state.iu[ids], expected, atol=1e-5, rtol=0)


def test_rounds_are_chosen_only_after_every_loss_of_the_previous_round(tmp_path, pool, tokenizer, make_model):
    events = []

    class StepLog(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            events.append(("step", state.global_step))

    args = lead_args(
        tmp_path, gradient_accumulation_steps=2, per_device_train_batch_size=4, lead_round_size=12, max_steps=6
    )  # 12 samples = 3 micro-batches = 2 optimizer steps (the last one partial)
    trainer = LEADSFTTrainer(
        model=make_model(), args=args, train_dataset=pool, processing_class=tokenizer, callbacks=[StepLog()]
    )
    selector = trainer.lead_selector
    plan, finish, compute_loss = selector.plan_round, selector.finish_round, trainer.compute_loss

    def spy_plan():
        planned = plan()
        events.append(("plan", set(planned.sample_ids.tolist())))
        return planned

    def spy_finish(planned, ids, losses, **kwargs):
        events.append(("finish", set(ids.tolist())))
        return finish(planned, ids, losses, **kwargs)

    def spy_loss(model, inputs, *a, **k):
        if model.training:
            events.append(("loss", set(inputs["lead_id"].tolist())))
        return compute_loss(model, inputs, *a, **k)

    selector.plan_round, selector.finish_round, trainer.compute_loss = spy_plan, spy_finish, spy_loss
    trainer.train()

    plans = [i for i, e in enumerate(events) if e[0] == "plan"]
    finishes = [i for i, e in enumerate(events) if e[0] == "finish"]
    assert len(plans) == 3 and len(finishes) == 3
    for r, (p, f) in enumerate(zip(plans, finishes)):
        planned = events[p][1]
        trained = set().union(*(e[1] for e in events[p:f] if e[0] == "loss"))
        assert trained == planned == events[f][1]  # the round's every loss, and only those, reached finish
        steps = [e for e in events[p : f + 1] if e[0] == "step"]
        assert len(steps) == 2  # both optimizer steps of the round happened before it was finished
        if r + 1 < len(plans):
            assert f < plans[r + 1]  # the next round was planned after this one was finished
            assert not [e for e in events[f : plans[r + 1]] if e[0] == "loss"]
    lines = (tmp_path / "out" / "lead_rounds.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 1, 2]


def test_budget_pace_spreads_new_samples_over_the_first_rounds_of_the_run(tmp_path, pool, tokenizer, make_model):
    """`lead_budget_pace=0.5` over a run of 16 steps, rounds of 8 samples in 2 steps of 4: 8 rounds, so the budget of
    12 is admitted over ceil(0.5 * 8) = 4 rounds, up to ceil(12 (r + 1) / 4) = 3, 6, 9, 12 selected after round r.
    By hand: round 0 has nothing to revisit, so it fills up with new samples beyond the pace (8); round 1 may add none
    (8 > 6); round 2 one (9); round 3 three (12). Every round is full, so the run makes its 16 steps in 8 rounds
    (a short round would end a Trainer epoch early and the run with fewer steps). With `max_steps` unset, 3 epochs
    of the budget give ceil(3 * 12 / 8) = 5 rounds, paced over 3. At 0 the first two rounds take 8 and 4 new."""
    args = lead_args(tmp_path, lead_budget=12, max_steps=16, lead_max_reuse=8, lead_budget_pace=0.5)  # 96 >= 64
    trainer = LEADSFTTrainer(model=make_model(), args=args, train_dataset=pool, processing_class=tokenizer)
    assert trainer.lead_settings.budget_pace_rounds == 4
    trainer.train()
    rounds = trainer.lead_state.rounds
    assert [r["selected"] for r in rounds[:5]] == [8, 8, 9, 12, 12]
    assert [len(r["sample_ids"]) for r in rounds] == [8] * 8
    assert trainer.state.global_step == 16
    epochs = LEADSFTTrainer(
        model=make_model(), args=lead_args(tmp_path, lead_budget=12, num_train_epochs=3, lead_budget_pace=0.5),
        train_dataset=pool,
        processing_class=tokenizer,
    )  # fmt: skip
    assert epochs.lead_settings.budget_pace_rounds == 3 and epochs.lead_max_steps == 5 * 2
    assert epochs.args.max_steps == -1  # the user's config is left as it was
    unpaced = LEADSFTTrainer(
        model=make_model(), args=lead_args(tmp_path, lead_budget=12, max_steps=4),  # the default: no pacing
        train_dataset=pool, processing_class=tokenizer,
    )  # fmt: skip
    unpaced.train()
    assert unpaced.lead_settings.budget_pace_rounds == 0
    assert [r["selected"] for r in unpaced.lead_state.rounds] == [8, 12]


def test_state_is_saved_in_checkpoints(tmp_path, pool, tokenizer, make_model):
    """The checkpoint's files hold the state as it was at the save: every array, the policy, the selector and the
    round log, compared with a snapshot taken at the save and told apart from the state at the end of training (one
    more round). Catches a field left out or stale in the files (e.g. IDU or the policy's state)."""
    import copy

    args = lead_args(tmp_path, max_steps=6, save_strategy="steps", save_steps=4, lead_initial_score="loss")
    trainer = LEADSFTTrainer(model=make_model(), args=args, train_dataset=pool, processing_class=tokenizer)
    at_save = {}

    class SnapshotAtSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step != 4:
                return
            at_save.update(
                arrays=copy.deepcopy(dict(trainer.lead_state.state_dict())),
                policy=copy.deepcopy(trainer.lead_run.policy.state_dict()),
                selector=copy.deepcopy(trainer.lead_selector.state_dict()),
                rounds=copy.deepcopy(trainer.lead_state.rounds),
            )

    trainer.add_callback(SnapshotAtSave())
    trainer.train()
    folder = tmp_path / "out" / "checkpoint-4"
    saved = np.load(folder / "lead_state.npz")
    for name, value in at_save["arrays"].items():
        np.testing.assert_array_equal(saved[name], value, err_msg=name)  # NaN-aware
    assert saved["use_count"].sum() == 16  # step 4 ends round 2: both rounds of 8 are in the checkpoint
    assert trainer.lead_state.use_count.sum() == 24  # the final state (3 rounds) is not what was saved
    assert not np.array_equal(saved["idu"], trainer.lead_state.idu)
    meta = json.loads((folder / "lead_policy.json").read_text())
    assert meta["policy"] == json.loads(json.dumps(at_save["policy"]))
    assert meta["selector"] == json.loads(json.dumps(at_save["selector"]))
    assert meta["rounds"] == json.loads(json.dumps(at_save["rounds"])) and len(meta["rounds"]) == 2
    assert meta["policy"] != json.loads(json.dumps(trainer.lead_run.policy.state_dict()))  # the policy moved on after
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]
    assert np.isfinite(saved["initial_iu"]).all()  # initial scores for every sample


def expect_error(tmp_path, match, dataset=None, args=None, **kwargs):
    from trl_lead.embedded import build_tiny_model, build_tokenizer, make_instruction_pool

    tokenizer = build_tokenizer()
    dataset = dataset if dataset is not None else make_instruction_pool(num_train=40, num_eval_per_family=1)[0]
    with pytest.raises(ValueError, match=match):
        args = args or lead_args(tmp_path, max_steps=2)
        LEADSFTTrainer(
            model=build_tiny_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32),
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            **kwargs,
        )
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_bad_input_is_refused_before_training(tmp_path):
    expect_error(tmp_path, "lead_policy", args=lead_args(tmp_path, lead_policy="exp4"))
    expect_error(tmp_path, "lead_cluster_column", args=lead_args(tmp_path, lead_cluster_column="topic"))
    expect_error(tmp_path, "lead_budget", args=lead_args(tmp_path, lead_budget=41))
    with pytest.raises(ValueError, match="lead_round_size"):
        lead_args(tmp_path, lead_round_size=0)
    for strategy in ("wrapped", "bfd_split"):  # they cut samples into pieces; BFD keeps them whole
        with pytest.raises(ValueError, match=f"packing_strategy='{strategy}'"):
            lead_args(tmp_path, packing=True, packing_strategy=strategy)
    long_prompt = [{"role": "user", "content": "x" * 90}, {"role": "assistant", "content": "y"}]
    truncated = Dataset.from_list([{"messages": long_prompt, "family_id": 0}] * 4)
    expect_error(tmp_path, "None of the 4 training samples has a trained token", dataset=truncated)


def test_computed_ifd_clusters_reuse_the_initial_scoring_pass(tmp_path, pool, tokenizer, make_model, monkeypatch):
    from trl_lead import scoring

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the conditional losses must come from the trainer's initial scoring pass")

    monkeypatch.setattr(scoring, "_conditional_losses", no_second_pass)
    monkeypatch.setenv("TRL_LEAD_CACHE", str(tmp_path / "cache"))
    args = lead_args(
        tmp_path,
        lead_cluster_column=None,
        lead_clusters="ifd",
        lead_num_clusters=3,
        lead_initial_score="loss",
        max_steps=2,
    )
    trainer = LEADSFTTrainer(model=make_model(), args=args, train_dataset=pool, processing_class=tokenizer)
    passes = []
    score_pool = trainer.score_pool
    trainer.score_pool = lambda: passes.append(1) or score_pool()
    trainer.train()
    assert len(passes) == 1  # one scoring pass gives the initial IU and IFD's numerator
    state = trainer.lead_state
    assert state.num_clusters == 3 and set(np.unique(state.cluster)) == {0, 1, 2}
    assert trainer.lead_clustering == {"feature": "ifd", "samples_without_prompt": 0}
    # The clusters are k-means on 1-D IFD = initial loss / loss of the answer alone, numbered by increasing IFD. The
    # reference reads the answers from the rows' text (the answer tokens and EOS that `assistant_only_loss` trains),
    # the trainer from the processed labels
    ifd = scoring.ifd_scores(
        make_model(),
        tokenizer,
        pool,
        conditional_losses=state.initial_iu,
        append_eos=True,
        max_length=64,
        show_progress=False,
    )
    means = [ifd[state.cluster == k].mean() for k in range(3)]
    assert means == sorted(means)
    assert all(ifd[state.cluster == 0].max() <= ifd[state.cluster == k].min() for k in (1, 2))


def test_update_sketch_reads_the_sampled_coordinates(make_model):
    from trl_lead.rounds import UpdateTracker

    params = list(make_model().parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    tracker = UpdateTracker(params, seed=3, exact_limit=0, sketch_size=500)
    offsets = np.cumsum([0] + [p.numel() for p in params])
    coordinates = torch.cat([idx + int(offsets[i]) for i, idx in tracker.coords])
    assert len(coordinates) == 500 and len(set(coordinates.tolist())) == 500  # distinct, fixed by the seed
    torch.testing.assert_close(tracker.snapshot(), flat[coordinates])
    same = UpdateTracker(params, seed=3, exact_limit=0, sketch_size=500)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(tracker.coords, same.coords))
    assert UpdateTracker(params, seed=3).snapshot().numel() == flat.numel()  # small models: exact copies


def token_losses(model, dataset, ids) -> list[torch.Tensor]:
    """Per sample, the log-probabilities of its whole vocabulary at each trained token, and the trained token ids,
    from its own full-logits forward (float64)."""
    rows = {int(i): r for i, r in zip(dataset["lead_id"], range(len(dataset)))}
    out = []
    model.eval()
    with torch.no_grad():
        for i in ids:
            row = dataset[rows[int(i)]]
            labels = torch.tensor(row["labels"][1:])
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1].double()
            trained = labels != -100
            out.append((torch.log_softmax(logits, -1)[trained], labels[trained]))
    return out


def smoothed_loss(per_sample, epsilon: float) -> float:
    """transformers' label smoothing over a batch: (1 - eps) x mean NLL + eps x mean over tokens and vocabulary of
    -log p, both averaged over the batch's trained tokens."""
    log_probs = torch.cat([lp for lp, _ in per_sample])
    labels = torch.cat([lb for _, lb in per_sample])
    nll = -log_probs.gather(1, labels[:, None])[:, 0]
    return float((1 - epsilon) * nll.mean() + epsilon * (-log_probs).mean())


def dft_loss(per_sample) -> float:
    """TRL's DFT loss (arXiv 2508.05629): each trained token's NLL weighted by its probability, mean over tokens."""
    log_probs = torch.cat([lp for lp, _ in per_sample])
    labels = torch.cat([lb for _, lb in per_sample])
    token_log_prob = log_probs.gather(1, labels[:, None])[:, 0]
    return float((-token_log_prob * token_log_prob.exp()).mean())


@pytest.mark.parametrize(
    "loss_settings", [{"label_smoothing_factor": 0.1}, {"loss_type": "dft"}], ids=["label-smoothing", "dft"]
)
def test_other_compute_loss_branches_still_record_plain_iu(tmp_path, pool, tokenizer, make_model, loss_settings):
    """The loss each branch returns for training is that branch's own loss, computed independently here from
    full-logits forwards (catches the plain NLL returned in its place), while IU stays the plain NLL."""
    args = lead_args(tmp_path, learning_rate=0.0, max_steps=2, **loss_settings)
    trainer = LEADSFTTrainer(model=make_model(), args=args, train_dataset=pool, processing_class=tokenizer)
    recorded = record_iu(trainer)
    returned = []
    compute_loss = trainer.compute_loss

    def spy_loss(model, inputs, *a, **k):
        ids = inputs["lead_id"].tolist() if model.training else None
        loss = compute_loss(model, inputs, *a, **k)
        if ids is not None:
            returned.append((ids, float(loss.detach())))
        return loss

    trainer.compute_loss = spy_loss
    trainer.train()
    ids = sorted(recorded)
    assert len(ids) == 8 and len(returned) == 2  # one round of 8 samples, two batches of 4
    # learning rate 0: the model every batch saw is the final one
    for batch_ids, loss in returned:
        per_sample = token_losses(trainer.model, trainer.train_dataset, batch_ids)
        if "label_smoothing_factor" in loss_settings:
            expected = smoothed_loss(per_sample, loss_settings["label_smoothing_factor"])
        else:
            expected = dft_loss(per_sample)
        plain = smoothed_loss(per_sample, 0.0)
        # Measured |loss - expected| <= 2.4e-7, |expected - plain| >= 1.8e-3 (label smoothing) / 4.6 (DFT), natively
        # and under the second kernels
        assert loss == pytest.approx(expected, abs=1e-5), (loss, expected)
        assert abs(expected - plain) > 1e-4  # 10x the tolerance above: told apart from the plain NLL
    # IU is the plain mean NLL of the trained tokens, whatever the training objective
    np.testing.assert_allclose(
        [recorded[i] for i in ids], reference_iu(trainer.model, trainer.train_dataset, ids), atol=1e-5, rtol=0
    )
