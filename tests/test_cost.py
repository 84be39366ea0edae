"""What LEAD runs before its first step: one scoring pass that also yields the embeddings, the answer-alone pass only
for IFD clusters, and, with `lead_candidates`, all of it on a subsample of a multiple of the budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import CPU_TRAINING_ARGS

from trl_lead import LEADConfig, LEADSFTTrainer
from trl_lead.selection import draw_candidates

# Asserts on float results of a model: also run under the second kernels (README "Tests")
pytestmark = pytest.mark.numerics

COMMON = dict(
    **CPU_TRAINING_ARGS,
    seed=0,
    dataloader_num_workers=0,
    per_device_train_batch_size=4,
    learning_rate=1e-3,
    lead_round_size=8,
    lead_budget=0.5,
    disable_tqdm=True,
)


def count_scored(trainer) -> list[int]:
    """Samples of every forward outside training (the passes before the first step), appended as they run: a padded
    batch's rows, or a padding-free row's segments (its positions restart at 0 at each sample)."""
    rows: list[int] = []

    def count(module, args, kwargs):
        if not module.training:
            positions = kwargs.get("position_ids")
            packed = positions is not None and len(positions) == 1
            rows.append(int((positions == 0).sum()) if packed else len(kwargs["input_ids"]))

    trainer.model.register_forward_pre_hook(count, with_kwargs=True)
    return rows


def reference_embeddings(model, input_ids, labels, prompt_only: bool) -> np.ndarray:
    """Mean last hidden state over each sample's prompt (tokens before the first trained one) or whole sequence,
    from a forward over those tokens alone, one sample at a time, L2-normalised."""
    out = []
    model.eval()
    with torch.no_grad():
        for ids, row in zip(input_ids, labels):
            end = next(t for t in range(1, len(row)) if row[t] != -100) if prompt_only else len(ids)
            hidden = model(input_ids=torch.tensor([ids[:end]]), output_hidden_states=True).hidden_states[-1][0]
            mean = hidden.float().mean(0)
            out.append((mean / mean.norm()).numpy())
    return np.stack(out)


@pytest.mark.parametrize("padding_free", [False, True])
def test_scoring_pass_yields_the_prompt_and_sequence_embeddings(tmp_path, pool, tokenizer, make_model, padding_free):
    # A causal model's hidden states at the prompt's positions do not depend on the answer that follows
    settings = dict(COMMON, max_length=None) if padding_free else COMMON
    args = LEADConfig(
        output_dir=str(tmp_path),
        padding_free=padding_free,
        lead_clusters="embedding",
        lead_sample_filter="small_loss",
        lead_filter_groups="prompts",
        **settings,
    )
    trainer = LEADSFTTrainer(model=make_model(), args=args, train_dataset=pool, processing_class=tokenizer)
    scored = count_scored(trainer)
    scores = trainer._initial_pass()
    assert sum(scored) == len(pool)  # one pass
    data = trainer.train_dataset.select(trainer._lead_row_of_id)
    model = make_model()
    for embeddings, prompt_only in ((scores.prompt_embeddings, True), (scores.sequence_embeddings, False)):
        expected = reference_embeddings(model, data["input_ids"], data["labels"], prompt_only)
        np.testing.assert_allclose(embeddings, expected, atol=1e-5)
    # prompts of different samples differ: a pooling that ignored the prompt mask would not match above
    assert np.abs(scores.prompt_embeddings - scores.sequence_embeddings).max() > 0.01


@pytest.mark.parametrize(("column", "passes"), [("family_id", 1), (None, 2)])
def test_defaults_run_one_pass_and_the_answer_alone_pass_only_for_ifd(
    tmp_path, pool, tokenizer, make_model, column, passes
):
    args = LEADConfig(output_dir=str(tmp_path), max_steps=2, lead_cluster_column=column, lead_num_clusters=3, **COMMON)
    assert (args.lead_sample_filter, args.lead_filter_groups, args.lead_clusters) == ("small_loss", "prompts", "ifd")
    trainer = LEADSFTTrainer(model=make_model(), args=args, train_dataset=pool, processing_class=tokenizer)
    scored = count_scored(trainer)
    trainer.train()
    assert sum(scored) == passes * len(pool)
    groups = trainer.lead_state.filter_group
    assert groups is not None and len(np.unique(groups)) == math.ceil(len(pool) / 32)


def test_draw_candidates_keeps_each_clusters_share():
    clusters = np.repeat([0, 1, 2, 3], [50, 30, 15, 5])
    picked = draw_candidates(20, 100, seed=3, clusters=clusters)
    assert len(np.unique(picked)) == 20 and np.all(np.diff(picked) > 0)
    np.testing.assert_array_equal(np.bincount(clusters[picked], minlength=4), [10, 6, 3, 1])  # 20 x shares
    # shares 3.5, 2.1, 1.05, 0.35 of 7: floors 3, 2, 1, 0 and the largest remainders (0.5, then 0.35) get one more
    np.testing.assert_array_equal(
        np.bincount(clusters[draw_candidates(7, 100, 0, clusters)], minlength=4), [4, 2, 1, 0]
    )
    np.testing.assert_array_equal(draw_candidates(20, 100, seed=3, clusters=clusters), picked)  # drawn once per seed
    assert len(set(draw_candidates(20, 100, seed=3).tolist())) == 20


def test_candidates_bound_the_passes_and_the_selection(tmp_path, pool, tokenizer, make_model):
    budget = 0.1  # 16 of the 160 samples: 32 candidates at twice the budget
    args = LEADConfig(
        output_dir=str(tmp_path),
        max_steps=4,
        lead_cluster_column="family_id",
        **{**COMMON, "lead_budget": budget, "lead_round_size": 16},
        lead_candidates=2.0,
    )
    trainer = LEADSFTTrainer(model=make_model(), args=args, train_dataset=pool, processing_class=tokenizer)
    candidates = trainer.lead_pool_rows
    assert len(candidates) == 32 and trainer.lead_settings.budget == 16
    assert trainer.lead_settings.filter_keep == 0.5  # 1.6 x the budget of 32 candidates, capped at a half
    families = np.asarray(pool["family_id"])
    np.testing.assert_array_equal(
        np.bincount(families[candidates], minlength=8), np.bincount(families[draw_candidates(32, 160, 0, families)])
    )
    scored = count_scored(trainer)
    trainer.train()
    assert sum(scored) == 32  # one pass over the candidates alone
    trained_rows = candidates[np.concatenate([r["sample_ids"] for r in trainer.lead_state.rounds])]
    assert set(trained_rows.tolist()) <= set(candidates.tolist()) and trainer.lead_state.num_selected <= 16
    assert np.array_equal(trainer.lead_state.cluster, families[candidates])


def test_candidates_must_hold_the_budget(tmp_path):
    with pytest.raises(ValueError, match="lead_candidates"):
        LEADConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, lead_candidates=0.5)
