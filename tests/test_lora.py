"""LEAD under PEFT/LoRA: IU from the adapted model, update vectors measured on the adapter parameters only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CPU_TRAINING_ARGS, record_iu
from peft import LoraConfig
from transformers import TrainerCallback

from trl_lead import LEADConfig, LEADSFTTrainer

# Asserts on trained models, statistics over seeds or float results: also run under the second kernels (README "Tests")
pytestmark = pytest.mark.numerics


def test_lora_iu_and_update_vectors_are_the_adapters(tmp_path, pool, tokenizer, make_model):
    args = LEADConfig(
        output_dir=str(tmp_path / "out"),
        **CPU_TRAINING_ARGS,
        seed=0,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        max_steps=2,
        lead_cluster_column="family_id",
        lead_round_size=8,
        lead_budget=0.5,
        lead_initial_score="none",
        lead_sample_filter="none",
    )
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    trainer = LEADSFTTrainer(
        model=make_model(), args=args, train_dataset=pool, processing_class=tokenizer, peft_config=peft_config
    )
    named = [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert named and all("lora_" in n for n, _ in named)
    before = torch.cat([p.detach().reshape(-1).clone() for _, p in named])
    recorded = record_iu(trainer)
    after_first_step = []

    class SnapshotAfterFirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                after_first_step.extend(p.detach().clone() for _, p in named)

    trainer.add_callback(SnapshotAfterFirstStep())
    trainer.train()

    after = torch.cat([p.detach().reshape(-1) for _, p in named])
    # One round: every cluster it trained stores that round's update
    state = trainer.lead_state
    assert set(trainer.lead_run.updates) == set(np.unique(state.cluster[state.use_count > 0]))
    for update in trainer.lead_run.updates.values():
        assert update.numel() == sum(p.numel() for _, p in named)  # adapters only, not the frozen base
        torch.testing.assert_close(update, after - before)
        assert update.norm() > 0
    # IU is the adapted model's loss at the moment of the batch: read for the second batch, after the first update
    # has made LoRA's B non-zero, it equals a forward of the model with that update's adapters and differs from the
    # frozen base model's loss (catches IU read from the base model, e.g. with the adapters disabled; at the first
    # batch B = 0 and both are the same)
    second_batch = trainer.lead_state.rounds[0]["sample_ids"][4:8]
    row_of_id = {int(i): r for r, i in enumerate(trainer.train_dataset["lead_id"])}

    def losses(model) -> np.ndarray:
        out = []
        model.eval()
        with torch.no_grad():
            for sample_id in second_batch:
                row = trainer.train_dataset[row_of_id[sample_id]]
                labels = torch.tensor(row["labels"][1:])
                logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1].double()
                nll = -torch.log_softmax(logits, -1).gather(1, labels.clamp(min=0)[:, None])[:, 0]
                out.append(float(nll[labels != -100].mean()))
        return np.array(out)

    recorded_second = np.array([recorded[i] for i in second_batch])
    base_losses = losses(make_model())
    with torch.no_grad():
        for (_, p), value in zip(named, after_first_step):
            p.copy_(value)
    assert any(float(value.abs().max()) > 0 for (n, _), value in zip(named, after_first_step) if "lora_B" in n)
    np.testing.assert_allclose(recorded_second, losses(trainer.model), atol=1e-5, rtol=0)
    assert np.abs(recorded_second - base_losses).max() > 1e-3, (recorded_second, base_losses)
