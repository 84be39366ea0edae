"""Shared fixtures: the embedded tokenizer, a small slice of the generated pool, tiny models. No downloads."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One warm-up cache for the whole session (and across sessions): the embedded base model is built once
os.environ.setdefault("TRL_LEAD_CACHE", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".cache", "trl_lead"))


#: The `SFTConfig` settings every CPU training test shares: prompts masked, no reporting or saving, short samples
CPU_TRAINING_ARGS = dict(
    assistant_only_loss=True,
    report_to="none",
    use_cpu=True,
    bf16=False,
    save_strategy="no",
    max_length=64,
)


@pytest.fixture(scope="session")
def tokenizer():
    from trl_lead.embedded import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def pool():
    from trl_lead.embedded import make_instruction_pool

    train, _ = make_instruction_pool(num_train=160, num_eval_per_family=4, seed=0)
    return train


@pytest.fixture
def make_model(tokenizer):
    from trl_lead.embedded import build_tiny_model

    def make(seed: int = 0):
        return build_tiny_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=seed)

    return make


def record_iu(trainer) -> dict[int, float]:
    """Returns a dict filled with every (sample id, IU) the trainer folds in, at each round's end (its public hook)."""
    from transformers import TrainerCallback

    recorded: dict[int, float] = {}

    class RecordIU(TrainerCallback):
        def on_round_end(self, args, state, control, record, trainer, **kwargs):
            ids = np.asarray(record["sample_ids"], dtype=np.int64)
            recorded.update(zip(ids.tolist(), trainer.lead_state.iu[ids].astype(np.float64).tolist()))

    trainer.add_callback(RecordIU())
    return recorded
