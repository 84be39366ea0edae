"""What `LEADSFTTrainer` keeps of the rounds it trains: sample ids through collation, each trained sample's loss from
the fused forward, the round in flight, and the parameter-update vectors of the gradient correction."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from .selection import PlannedRound

SAMPLE_ID = "lead_id"  # dataset column carrying each training sample's id (its index in the pool)
# Trainable parameters above which update vectors are sketched: exact copies cost (clusters + 1) x 4 bytes per
# parameter in host memory, a sketch ~2 MB in all, and its cosines are within 0.005 (benchmarks/sketch_accuracy.py)
EXACT_UPDATE_LIMIT = 1_000_000
SKETCH_SIZE = 65_536


def per_sample_loss(log_probs: torch.Tensor, label_mask: torch.Tensor, position_ids: torch.Tensor | None):
    """Sum of token losses and token count per sample, from the fused LM head's per-token outputs.

    `log_probs`/`label_mask` have shape (B, T-1): position t scores token t+1. Padded batches have one sample per
    row. Padding-free batches (B = 1, `position_ids` restarting at 0 at each sample) have one sample per segment.
    """
    token_loss = -log_probs.detach().float() * label_mask
    if position_ids is None or log_probs.size(0) != 1 or not (position_ids[0, 1:] == 0).any():
        return token_loss.sum(1), label_mask.sum(1)
    segment = torch.cumsum(position_ids[0] == 0, 0) - 1  # segment of each input token
    segment = segment[1:]  # the segment of the token each position scores
    num_segments = int(segment.max()) + 1
    sums = torch.zeros(num_segments, device=log_probs.device).index_add_(0, segment, token_loss[0])
    counts = torch.zeros(num_segments, device=log_probs.device).index_add_(0, segment, label_mask[0].float())
    return sums, counts


EMBEDDED_TOKENS = 512  # tokens of a sample (from its start) that its embeddings average, as `scoring.embed`'s default


def mean_hidden_states(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    prompt_only: bool,
) -> torch.Tensor:
    """Each sample's last hidden states averaged over its first `EMBEDDED_TOKENS` tokens, or over its prompt (the
    tokens before its first trained one) among them, L2-normalised: float32, one row per sample.

    In a causal model a position's hidden state depends only on the tokens up to it, so the prompt's states of a
    forward over the whole sample equal those of a forward over the prompt alone: the scoring pass yields the prompt
    embeddings of `clustering.prompt_groups` without a pass of their own. Padded batches have one sample per row,
    padding-free ones (one row, `position_ids` restarting at 0) one per segment, as in `per_sample_loss`."""
    width = hidden.size(-1)
    if position_ids is not None and hidden.size(0) == 1 and bool((position_ids[0, 1:] == 0).any()):
        position = position_ids[0]
        segment = torch.cumsum(position == 0, 0) - 1
        valid = torch.ones_like(position, dtype=torch.bool)
    else:
        rows, length = labels.shape
        position = torch.arange(length, device=labels.device).repeat(rows)
        segment = torch.arange(rows, device=labels.device).repeat_interleave(length)
        valid = torch.ones(rows * length, dtype=torch.bool, device=labels.device)
        if attention_mask is not None:
            valid = attention_mask.reshape(-1).bool()
    labels = labels.reshape(-1)
    keep = valid & (position < EMBEDDED_TOKENS)
    num_segments = int(segment.max()) + 1
    if prompt_only:
        trained = ((labels != -100) & (position >= 1)).long()
        seen = torch.cumsum(trained, 0)  # trained tokens up to and including each position, over the whole batch
        before = torch.zeros(num_segments, dtype=seen.dtype, device=seen.device)
        before = before.scatter_reduce(0, segment, seen - trained, reduce="amin", include_self=False)
        keep &= seen == before[segment]  # no trained token yet in this sample
    weights = keep.float().unsqueeze(-1)
    hidden = hidden.reshape(-1, width).float() * weights
    sums = torch.zeros(num_segments, width, device=hidden.device).index_add_(0, segment, hidden)
    counts = torch.zeros(num_segments, 1, device=hidden.device).index_add_(0, segment, weights)
    return torch.nn.functional.normalize(sums / counts, dim=-1)


class PoolScores(NamedTuple):
    """What one no-grad pass over the pool yields, in id order: each sample's loss (its initial IU and IFD's
    numerator) and, where asked for, its prompt embedding and its whole-sequence embedding (`mean_hidden_states`)."""

    losses: np.ndarray
    prompt_embeddings: np.ndarray | None = None
    sequence_embeddings: np.ndarray | None = None


class CollatorWithIds:
    """Wraps the trainer's collator so each training batch carries its samples' ids (TRL's collator drops unknown
    keys). Batches of other datasets (evaluation) have no ids and pass through unchanged."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if not all(SAMPLE_ID in example for example in examples):
            return self.collator(examples)
        ids = [example[SAMPLE_ID] for example in examples]
        batch = self.collator([{k: v for k, v in example.items() if k != SAMPLE_ID} for example in examples])
        batch[SAMPLE_ID] = torch.tensor(ids, dtype=torch.long)
        return batch


class LossRecorder:
    """Each recorded sample's summed loss and token count, kept on the device until read (no host sync per step).

    The losses of training steps come from the per-token outputs of the fused forward that `SFTTrainer.compute_loss`
    runs anyway: `watch` wraps the model's fused forward, which keeps its outputs inside `capture()`.

    Attributes:
        batches (`list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]`): per recorded batch, its sample ids, loss
            sums and token counts.
        restored (`list[tuple[int, float]]`): (id, IU) a resumed round recorded before its checkpoint.
    """

    def __init__(self):
        self.batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.restored: list[tuple[int, float]] = []
        self._capturing = False
        self._captured: tuple[torch.Tensor, torch.Tensor] | None = None

    def watch(self, model: torch.nn.Module) -> None:
        """Wrap the fused forward of `model` (an instance attribute set by TRL's `add_fused_lm_head`); wrapped, not
        hooked, because PEFT calls the base model's `forward` directly, bypassing module hooks."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        fused_forward = base.forward

        @functools.wraps(fused_forward)
        def forward(*args, **kwargs):
            outputs = fused_forward(*args, **kwargs)
            if self._capturing and kwargs.get("fused_lm_head"):
                self._captured = (outputs.log_probs, outputs.label_mask)
                self._capturing = False  # the first fused forward of the step is the one that trains
            return outputs

        base.forward = forward

    @contextlib.contextmanager
    def capture(self):
        """Keep the outputs of the first fused forward run inside this block (for `record_captured`)."""
        self._captured, self._capturing = None, True
        try:
            yield
        finally:
            self._capturing = False

    def record_captured(self, ids: torch.Tensor, position_ids: torch.Tensor | None) -> None:
        log_probs, label_mask = self._captured
        self._captured = None
        self.record(ids, log_probs, label_mask, position_ids)

    def record(
        self, ids: torch.Tensor, log_probs: torch.Tensor, label_mask: torch.Tensor, position_ids: torch.Tensor | None
    ) -> None:
        sums, counts = per_sample_loss(log_probs, label_mask, position_ids)
        # `pad_to_multiple_of` pads a padding-free row with positions 0: one empty segment per padded token
        self.batches.append((ids.to(sums.device), sums[: len(ids)], counts[: len(ids)]))

    def pairs(self) -> list[tuple[int, float]]:
        """(id, IU) of every sample recorded on this rank since the last `clear`, restored ones first."""
        if not self.batches:
            return list(self.restored)
        ids = torch.cat([b[0] for b in self.batches]).cpu().numpy()
        sums = torch.cat([b[1] for b in self.batches]).cpu().numpy()
        counts = torch.cat([b[2] for b in self.batches]).cpu().numpy()
        return self.restored + list(zip(ids.tolist(), (sums / np.maximum(counts, 1)).tolist()))

    def clear(self) -> None:
        self.batches, self.restored = [], []


@dataclass
class RoundInFlight:
    """A planned round from its planning until its losses are folded in; a checkpoint taken inside it saves it."""

    epoch: int  # the Trainer epoch that trains it
    planned: PlannedRound
    end_step: int  # the global step of its last optimizer step
    start_params: torch.Tensor  # the trainable parameters (or their sketch) at its start: its update starts there
    start_time: float  # `time.perf_counter()` at its start (or at the resume)


class UpdateTracker:
    """Parameter-change vectors of the trainable parameters over a round, exact or on a fixed random sketch.

    Exact copies cost one float32 vector of the trainable parameters per stored update (one per cluster, plus the
    round's start). Above `EXACT_UPDATE_LIMIT` parameters, a fixed random subset of `SKETCH_SIZE` coordinates (uniform
    over all trainable coordinates, drawn once) stands in for the vector: cosines between such restrictions are
    consistent estimates, with error of order 1/sqrt(SKETCH_SIZE) for dense updates.
    """

    def __init__(
        self,
        params: list[torch.nn.Parameter],
        seed: int,
        exact_limit: int = EXACT_UPDATE_LIMIT,
        sketch_size: int = SKETCH_SIZE,
    ):
        self.params = params
        sizes = [_local(p).numel() for p in params]  # local shards under FSDP/ZeRO-3
        self.total = sum(sizes)
        self.exact = self.total <= exact_limit
        if not self.exact:
            generator = torch.Generator().manual_seed(seed)
            flat = torch.randperm(self.total, generator=generator)[:sketch_size].sort().values
            offsets = torch.tensor([0, *np.cumsum(sizes)])
            owner = torch.searchsorted(offsets, flat, right=True) - 1
            self.coords = [(i, flat[owner == i] - offsets[i]) for i in range(len(params)) if (owner == i).any()]

    @torch.no_grad()
    def snapshot(self) -> torch.Tensor:
        params = [_local(p) for p in self.params]
        if self.exact:
            return torch.cat([p.float().reshape(-1).cpu() for p in params])
        return torch.cat([params[i].reshape(-1)[idx.to(params[i].device)].float().cpu() for i, idx in self.coords])


def _local(param: torch.Tensor) -> torch.Tensor:
    """This rank's values of a parameter: the local shard of an FSDP2 DTensor, else the tensor itself."""
    param = param.detach()
    return param.to_local() if hasattr(param, "to_local") else param


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    norm = float(a.norm() * b.norm())
    return float(a @ b) / norm if norm > 0 else 1.0
