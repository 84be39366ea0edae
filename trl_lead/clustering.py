# Copyright 2026 The trl-lead authors. Licensed under the Apache License, Version 2.0.
"""Clusters for LEAD's arms: IFD difficulty scores, sentence embeddings, k-means, and a disk cache.

LEAD (arXiv 2505.07437) treats clusters of the training pool as the arms of a bandit. When the user brings no cluster
column, this module computes one:

- `lead_clusters="ifd"` (the paper): the Instruction-Following Difficulty of every sample under the (warm-up) model,
  clustered in 1-D by k-means into K=7 groups ([`ifd_scores`], [`cluster_embeddings`]);
- `lead_clusters="embedding"`: mean-pooled hidden states of the training model (or of a named Hugging Face encoder),
  reduced by PCA or UMAP and clustered by k-means ([`embed`], [`cluster_embeddings`]).

[`compute_clusters`] is the one entry point the trainer and the `trl-lead cluster` command call; it caches scores,
embeddings and labels on disk under a fingerprint of the model, the tokenizer, the data and the settings
([`cached`]), so a second run of the same job does not score again. [`plot_clusters_2d`] draws the clusters.

Only torch, transformers, numpy, scikit-learn, umap-learn, matplotlib and tqdm are used; nothing is downloaded unless
the user names a Hugging Face encoder in [`embed`].
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .files import atomic_write, cache_dir_path

logger = logging.getLogger(__name__)

__all__ = [
    "CLUSTER_METHODS",
    "KMEANS_FULL_MAX_ELEMENTS",
    "answer_losses",
    "cache_dir_path",
    "cached",
    "cluster_embeddings",
    "compute_clusters",
    "dataset_fingerprint",
    "embed",
    "fingerprint",
    "ifd_scores",
    "model_fingerprint",
    "plot_clusters_2d",
    "pool_clusters",
    "PoolClusters",
    "sample_texts",
    "tokenizer_fingerprint",
    "trained_tokens",
]

CLUSTER_METHODS = ("kmeans", "pca-kmeans", "umap-kmeans")
"""Names accepted by `cluster_embeddings(method=...)`."""

KMEANS_FULL_MAX_ELEMENTS = 10_000_000
"""`cluster_embeddings` runs exact `KMeans` (Lloyd) when `n_samples * n_features` of the data it clusters is at most
this (e.g. 1-D IFD scores up to 10M samples, 384-d embeddings up to ~26k samples, 50-d PCA output up to 200k samples)
and `MiniBatchKMeans` above it. Both keep the best of 3 k-means++ initialisations, which matters: on 1M points
around 8 well separated centres (benchmarks/clustering.py, seed 0) a single initialisation merged two of the blobs
(adjusted Rand index 0.83), with and without PCA; 3 found all 8."""

PCA_DIMS = 50
"""Target dimension of the PCA step of `"pca-kmeans"` (and of the pre-reduction before UMAP)."""

PCA_FIT_SIZE = 200_000
"""PCA is fitted on a random subsample of at most this many rows and then applied to all rows in chunks, which
bounds memory to the input plus the (N, 50) output; 200k rows estimate a 384x384 covariance to far better than the
precision k-means needs."""

UMAP_DIMS = 5
"""Output dimension of the UMAP step of `"umap-kmeans"` (BERTopic's choice for clustering: a few dims, min_dist=0)."""

_CACHE_VERSION = 1  # bump when a cached quantity's definition changes
_CHUNK = 65_536
_UMAP_TRANSFORM_CHUNK = 100_000
_EMBEDDING_CACHE_MAX_BYTES = 2 * 1024**3


# ---------------------------------------------------------------------------------------------------------------------
# Reading rows: conversational (`messages`) or prompt/completion
# ---------------------------------------------------------------------------------------------------------------------


def _num_rows(dataset: Any) -> int:
    try:
        return len(dataset)
    except TypeError:
        raise ValueError(
            "`dataset` has no length (an IterableDataset or a generator?). Clustering needs the whole pool: pass a "
            "`datasets.Dataset` or a list of dicts (e.g. `Dataset.from_generator(...)` or `list(iterable)`)."
        ) from None


def _iter_rows(dataset: Any) -> Iterable[Mapping[str, Any]]:
    for row in dataset:
        if not isinstance(row, Mapping):
            raise ValueError(
                f"`dataset` rows must be dicts with `messages` or `prompt`/`completion`, got {type(row).__name__}."
            )
        yield row


def _content_text(content: Any) -> str:
    """Text of a message content: a string, or a list of typed parts (`{"type": "text", "text": ...}`)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(part.get("text", "") if isinstance(part, Mapping) else str(part) for part in content)
    return str(content)


def _split_conversation(messages: Sequence[Mapping[str, Any]], index: int) -> tuple[list[dict], str]:
    """Return (messages before the last assistant turn, content of the last assistant turn)."""
    last = None
    for j in range(len(messages) - 1, -1, -1):
        if messages[j].get("role") == "assistant":
            last = j
            break
    if last is None:
        raise ValueError(
            f"Row {index}: `messages` has no assistant turn, so it has no answer. Add an assistant message with the "
            "answer, or drop the row."
        )
    context = [dict(m) for m in messages[:last]]
    answer = _content_text(messages[last].get("content"))
    return context, answer


def _instruction_answer_texts(tokenizer: Any, row: Mapping[str, Any], index: int) -> tuple[str, bool, str]:
    """Return (instruction text, whether it is chat-rendered, answer text) for one row; validate both are non-empty.

    Chat-rendered instructions already hold the template's special tokens (BOS etc.), so they are tokenized without
    adding special tokens; a plain-text prompt is tokenized the way TRL's `SFTTrainer` tokenizes it (with them).
    """
    if "messages" in row and row["messages"] is not None:
        context, answer = _split_conversation(row["messages"], index)
        if not any(_content_text(m.get("content")).strip() for m in context):
            raise ValueError(
                f"Row {index}: the instruction is empty (no non-empty message before the last assistant turn). IFD "
                "scores an answer given its instruction: add the user message before the answer, or drop the row."
            )
        if not answer.strip():
            raise ValueError(
                f"Row {index}: the answer is empty (the last assistant message has no text). Fill in the assistant "
                "answer, or drop the row."
            )
        return _render_chat(tokenizer, context, index), True, answer
    if "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str):
            instruction, rendered = prompt, False
            empty_instruction = not prompt.strip()
        else:  # conversational prompt/completion: lists of messages
            empty_instruction = not any(_content_text(m.get("content")).strip() for m in prompt)
            instruction = "" if empty_instruction else _render_chat(tokenizer, [dict(m) for m in prompt], index)
            rendered = True
        if not isinstance(completion, str):
            _, completion = _split_conversation(completion, index)
        if empty_instruction:
            raise ValueError(
                f"Row {index}: the instruction is empty (`prompt` has no text). IFD scores an answer given its "
                "instruction: fill in `prompt`, or drop the row."
            )
        if not completion.strip():
            raise ValueError(
                f"Row {index}: the answer is empty (`completion` has no text). Fill in `completion`, or drop the row."
            )
        return instruction, rendered, completion
    raise ValueError(
        f"Row {index} has neither a `messages` column nor `prompt` and `completion` columns (it has "
        f"{sorted(row)}). Give conversational rows (`messages`: list of {{role, content}}) or prompt/completion rows."
    )


def _render_chat(tokenizer: Any, messages: list[dict], index: int) -> str:
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"Row {index} is conversational but the tokenizer has no chat template. Set `tokenizer.chat_template` "
            "(e.g. with trl's `clone_chat_template`) or give prompt/completion strings."
        )
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):  # some versions return a list for a single conversation
        text = text[0]
    return text


def sample_texts(dataset: Any, text_column: str | None = None) -> list[str]:
    r"""
    Plain text of every sample, for embedding: the message contents joined by newlines (no chat template, so an
    outside encoder sees ordinary text), `prompt + "\n" + completion`, or the `text` column.

    Args:
        dataset (`datasets.Dataset` or `Sequence[dict]`):
            Rows with `messages`, `prompt`/`completion`, or `text`.
        text_column (`str`, *optional*):
            Use this column as the text and ignore the others.

    Returns:
        `list[str]` of length `len(dataset)`.
    """
    _num_rows(dataset)
    texts = []
    for i, row in enumerate(_iter_rows(dataset)):
        if text_column is not None:
            if text_column not in row:
                raise ValueError(
                    f"`text_column={text_column!r}` is not a column of `dataset` (row {i} has {sorted(row)})."
                )
            texts.append(str(row[text_column]))
        elif row.get("messages") is not None:
            texts.append("\n".join(_content_text(m.get("content")) for m in row["messages"]))
        elif "prompt" in row and "completion" in row:
            parts = []
            for value in (row["prompt"], row["completion"]):
                parts.append(
                    value if isinstance(value, str) else "\n".join(_content_text(m.get("content")) for m in value)
                )
            texts.append("\n".join(parts))
        elif "text" in row:
            texts.append(str(row["text"]))
        else:
            raise ValueError(
                f"Row {i} has none of `messages`, `prompt`/`completion`, `text` (it has {sorted(row)}); pass "
                "`text_column=` to name the column to embed."
            )
    return texts


def _encode(tokenizer: Any, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    out: list[list[int]] = []
    for start in range(0, len(texts), 1024):
        out.extend(tokenizer(texts[start : start + 1024], add_special_tokens=add_special_tokens)["input_ids"])
    return out


def _encode_pairs(tokenizer: Any, dataset: Any, append_eos: bool = False) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of (instruction, answer) for every row. The answer is tokenized alone, without special tokens, and
    followed by the EOS token when `append_eos`."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if append_eos and eos is None:
        raise ValueError(
            "`append_eos=True` but the tokenizer has no EOS token; set `tokenizer.eos_token` or pass append_eos=False."
        )
    rendered_instr, rendered_idx, plain_instr, plain_idx, answers = [], [], [], [], []
    for i, row in enumerate(_iter_rows(dataset)):
        instruction, rendered, answer = _instruction_answer_texts(tokenizer, row, i)
        (rendered_instr if rendered else plain_instr).append(instruction)
        (rendered_idx if rendered else plain_idx).append(i)
        answers.append(answer)
    instructions: list[list[int]] = [[] for _ in answers]
    for idx, ids in zip(rendered_idx, _encode(tokenizer, rendered_instr, add_special_tokens=False)):
        instructions[idx] = ids
    for idx, ids in zip(plain_idx, _encode(tokenizer, plain_instr, add_special_tokens=True)):
        instructions[idx] = ids
    answer_ids = _encode(tokenizer, answers, add_special_tokens=False)
    for i, (ins, ans) in enumerate(zip(instructions, answer_ids)):
        if not ins:
            raise ValueError(f"Row {i}: the instruction tokenizes to no tokens. Give it some text, or drop the row.")
        if not ans:
            raise ValueError(f"Row {i}: the answer tokenizes to no tokens. Give it some text, or drop the row.")
    if append_eos:
        answer_ids = [ans + [int(eos)] for ans in answer_ids]
    return instructions, answer_ids


# ---------------------------------------------------------------------------------------------------------------------
# Model scoring
# ---------------------------------------------------------------------------------------------------------------------


def _model_device(model: torch.nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _unwrap(model: Any) -> Any:
    """The model whose `forward` signature tells which arguments are accepted (under DDP and PEFT wrappers)."""
    inner = getattr(model, "module", None)  # DistributedDataParallel
    if isinstance(inner, torch.nn.Module):
        model = inner
    get_base = getattr(model, "get_base_model", None)  # peft
    return get_base() if callable(get_base) else model


def _accepts(model: Any, name: str) -> bool:
    try:
        return name in inspect.signature(_unwrap(model).forward).parameters
    except (TypeError, ValueError):
        return False


def _pad_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


def _right_padded(
    sequences: Sequence[Sequence[int]], rows: np.ndarray, lengths: np.ndarray, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of `rows` right-padded to the longest of them, and the matching attention mask."""
    width = int(lengths[rows].max())
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, i in enumerate(rows):
        ids[r, : lengths[i]] = torch.tensor(sequences[i], dtype=torch.long)
        mask[r, : lengths[i]] = 1
    return ids, mask


class _EvalMode:
    """Put a model in eval mode for a block and restore its previous training flag."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)
        return False


def _sequence_losses(
    model: torch.nn.Module,
    sequences: list[list[int]],
    starts: list[int],
    pad_id: int,
    batch_size: int,
    desc: str,
    show_progress: bool,
) -> np.ndarray:
    """Mean cross-entropy, per sequence, of the tokens `seq[start:]` given `seq[:start]` (`start >= 1`).

    Sequences are batched by length (longest first, so an out-of-memory error shows on the first batch), right-padded
    with an attention mask, and the logits are computed only on the span of positions that some row of the batch
    scores (`logits_to_keep`, where the model supports it). Losses are in float32 from the logits, reduced in float64.
    """
    n = len(sequences)
    losses = np.empty(n, dtype=np.float64)
    if n == 0:
        return losses
    device = _model_device(model)
    keep_logits = _accepts(model, "logits_to_keep")
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")
    with torch.no_grad(), _EvalMode(model), tqdm(total=n, desc=desc, disable=not show_progress, unit="sample") as bar:
        for b in range(0, n, batch_size):
            rows = order[b : b + batch_size]
            ids, mask = _right_padded(sequences, rows, lengths, pad_id)
            row_starts = torch.tensor([starts[i] for i in rows], dtype=torch.long)
            row_ends = torch.tensor([lengths[i] for i in rows], dtype=torch.long)
            # logits at position p predict token p + 1; scored positions of a row: [start - 1, length - 1)
            lo, hi = int(row_starts.min()) - 1, ids.shape[1] - 1
            kwargs: dict[str, Any] = {"use_cache": False}
            if keep_logits:
                kwargs["logits_to_keep"] = torch.arange(lo, hi, device=device)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).logits
            if not keep_logits:
                logits = logits[:, lo:hi]
            targets = ids[:, lo + 1 : hi + 1].to(device)
            ce = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
            ).view(len(rows), hi - lo)
            pos = torch.arange(lo, hi).unsqueeze(0)
            scored = ((pos >= (row_starts - 1).unsqueeze(1)) & (pos < (row_ends - 1).unsqueeze(1))).to(device)
            sums = (ce.double() * scored).sum(dim=1)
            counts = scored.sum(dim=1)
            losses[rows] = (sums / counts).cpu().numpy()
            bar.update(len(rows))
    return losses


def _truncate(instruction: list[int], answer: list[int], max_length: int | None) -> tuple[list[int], list[int]]:
    """Keep at most `max_length - 1` answer tokens (its start) and the end of the instruction, within `max_length`."""
    if max_length is None or len(instruction) + len(answer) <= max_length:
        return instruction, answer
    answer = answer[: max_length - 1]
    return instruction[len(instruction) - (max_length - len(answer)) :], answer


def _check_scoring_args(batch_size: int, max_length: int | None) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
        raise ValueError(
            f"`max_length` must be None or an int >= 2 (one instruction + one answer token), got {max_length!r}."
        )


def answer_losses(
    model: torch.nn.Module,
    tokenizer: Any,
    dataset: Any,
    batch_size: int = 16,
    max_length: int | None = None,
    show_progress: bool = True,
    append_eos: bool = False,
) -> np.ndarray:
    r"""
    Mean cross-entropy of each sample's answer tokens given its instruction: the numerator of IFD, and the paper's
    "initial IU" of a sample under the model.

    The instruction of a conversational row is every message before the last assistant turn, rendered with the
    tokenizer's chat template and its generation prompt; the answer is the text of the last assistant turn (without
    the template's end-of-turn tokens). A prompt/completion row uses `prompt` (tokenized with the tokenizer's special
    tokens, as TRL does) and `completion`. The answer is tokenized on its own and appended to the instruction's ids.

    Args:
        model (`torch.nn.Module`):
            A causal LM (`AutoModelForCausalLM`, optionally wrapped by PEFT) on any device; inputs are sent to the
            device of its parameters. It is put in eval mode for the pass and its previous mode restored.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer; needs a chat template for conversational rows.
        dataset (`datasets.Dataset` or `Sequence[dict]`):
            Rows with `messages` (list of `{"role", "content"}`) or `prompt` and `completion`.
        batch_size (`int`, *optional*, defaults to `16`):
            Sequences per forward pass. Batches are formed from length-sorted sequences and right-padded with an
            attention mask; a sample's loss does not depend on the other samples of its batch.
        max_length (`int`, *optional*):
            Longest sequence in tokens. Longer samples keep the first `max_length - 1` answer tokens and the end of
            the instruction. `None` keeps everything.
        show_progress (`bool`, *optional*, defaults to `True`):
            Show a tqdm progress bar.
        append_eos (`bool`, *optional*, defaults to `False`):
            Score the tokenizer's EOS token after the answer as one more answer token. With a chat template that
            closes the assistant turn with EOS alone (like the embedded default's) or TRL's prompt/completion
            format, the scored tokens are then exactly those `SFTTrainer` trains on, so these losses equal the
            trainer's per-sample loss.

    Returns:
        `np.ndarray` of shape `(len(dataset),)`, float64.

    Raises:
        `ValueError`: a row with an empty instruction or answer (the message names the row and the fix).
    """
    _check_scoring_args(batch_size, max_length)
    _num_rows(dataset)
    return _conditional_losses(
        model, tokenizer, _encode_pairs(tokenizer, dataset, append_eos), batch_size, max_length, show_progress
    )


def _conditional_losses(model, tokenizer, pairs, batch_size, max_length, show_progress) -> np.ndarray:
    instructions, answers = pairs
    seqs, starts = [], []
    for ins, ans in zip(instructions, answers):
        ins, ans = _truncate(ins, ans, max_length)
        seqs.append(ins + ans)
        starts.append(len(ins))
    return _sequence_losses(model, seqs, starts, _pad_id(tokenizer), batch_size, "answer | instruction", show_progress)


def _alone_prefix(tokenizer: Any) -> list[int]:
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return [int(value)]
    return []


def _alone_losses(model, tokenizer, pairs, batch_size, max_length, show_progress) -> np.ndarray:
    _, answers = pairs
    prefix = _alone_prefix(tokenizer)
    seqs, starts = [], []
    for i, ans in enumerate(answers):
        if max_length is not None:
            ans = ans[: max_length - 1]
        if prefix:
            seqs.append(prefix + ans)
            starts.append(1)
        else:
            if len(ans) < 2:
                raise ValueError(
                    f"Row {i}: the answer is one token and the tokenizer has no BOS or EOS token to start it from, so "
                    "its loss alone is undefined. Set `tokenizer.bos_token`, or drop the row."
                )
            seqs.append(ans)
            starts.append(1)
    return _sequence_losses(model, seqs, starts, _pad_id(tokenizer), batch_size, "answer alone", show_progress)


def ifd_scores(
    model: torch.nn.Module,
    tokenizer: Any,
    dataset: Any,
    batch_size: int = 16,
    max_length: int | None = None,
    show_progress: bool = True,
    conditional_losses: np.ndarray | Sequence[float] | None = None,
    append_eos: bool = False,
) -> np.ndarray:
    r"""
    Instruction-Following Difficulty (Li et al. 2024, "Cherry LLM") of every sample:

        IFD(i) = CE(answer | instruction) / CE(answer alone)

    with CE the mean cross-entropy over the answer tokens. Values near or above 1 mean the instruction does not help
    the model produce the answer (hard or noisy samples); low values mean it helps a lot.

    The conditional loss is [`answer_losses`]. The unconditional one scores the same answer tokens after the
    tokenizer's BOS token (EOS when it has no BOS; with neither, the first answer token is not scored alone).

    Args:
        model (`torch.nn.Module`):
            A causal LM on any device; put in eval mode for the passes and restored after.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer; needs a chat template for conversational rows.
        dataset (`datasets.Dataset` or `Sequence[dict]`):
            Rows with `messages` or `prompt`/`completion` (see [`answer_losses`]).
        batch_size (`int`, *optional*, defaults to `16`):
            Sequences per forward pass.
        max_length (`int`, *optional*):
            Longest sequence in tokens (see [`answer_losses`]); `None` keeps everything.
        show_progress (`bool`, *optional*, defaults to `True`):
            Show tqdm progress bars.
        conditional_losses (`np.ndarray`, *optional*):
            Per-sample CE(answer | instruction) already computed, e.g. by the trainer's initial scoring pass; the
            conditional half is then skipped and these values are used as they are (they should score the same
            tokens: see `append_eos`).
        append_eos (`bool`, *optional*, defaults to `False`):
            Count the EOS token after the answer as an answer token, in both losses (see [`answer_losses`]).

    Returns:
        `np.ndarray` of shape `(len(dataset),)`, float64.
    """
    _check_scoring_args(batch_size, max_length)
    n = _num_rows(dataset)
    pairs = _encode_pairs(tokenizer, dataset, append_eos)
    if conditional_losses is None:
        conditional = _conditional_losses(model, tokenizer, pairs, batch_size, max_length, show_progress)
    else:
        conditional = _check_losses(conditional_losses, n)
    alone = _alone_losses(model, tokenizer, pairs, batch_size, max_length, show_progress)
    return conditional / np.maximum(alone, 1e-12)


def _check_losses(losses: Any, n: int) -> np.ndarray:
    arr = np.asarray(losses, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(
            f"`conditional_losses` has {arr.shape[0]} values but the dataset has {n} rows; pass one loss "
            "per row, in dataset order."
        )
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(
            f"`conditional_losses` holds NaN or inf (first at row {bad}); pass finite losses or None to "
            "recompute them."
        )
    return arr


# ---------------------------------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------------------------------


def _load_encoder(name: str | os.PathLike) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModel.from_pretrained(name)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    return model, tokenizer


def embed(
    texts: Sequence[str],
    model: torch.nn.Module | str | os.PathLike | None = None,
    tokenizer: Any = None,
    batch_size: int = 32,
    max_length: int | None = 512,
    normalize: bool = False,
    show_progress: bool = True,
) -> np.ndarray:
    r"""
    Sentence embeddings: the last hidden states of `model`, averaged over each text's tokens (weighted by the
    attention mask, so padding does not count).

    Args:
        texts (`Sequence[str]`):
            The texts (see [`sample_texts`] for a dataset's).
        model (`torch.nn.Module` or `str`):
            The model to embed with: the training model itself (a causal LM: its final hidden states are used, its
            logits are not computed beyond one position; no download), any `AutoModel` encoder, or the name/path of a
            Hugging Face encoder (loaded with `AutoModel`/`AutoTokenizer`; only this may need the network), e.g.
            `"sentence-transformers/all-MiniLM-L6-v2"`.
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            The model's tokenizer; required when `model` is a module, loaded with the model when it is a name.
        batch_size (`int`, *optional*, defaults to `32`):
            Texts per forward pass (length-sorted, right-padded).
        max_length (`int`, *optional*, defaults to `512`):
            Texts are truncated to this many tokens; `None` keeps everything.
        normalize (`bool`, *optional*, defaults to `False`):
            Scale each embedding to unit L2 norm (then Euclidean k-means clusters by cosine similarity).
        show_progress (`bool`, *optional*, defaults to `True`):
            Show a tqdm progress bar.

    Returns:
        `np.ndarray` of shape `(len(texts), hidden_size)`, float32.
    """
    if model is None:
        raise ValueError(
            "`model` is required: pass the training model (with its `tokenizer`) or the name/path of a "
            "Hugging Face encoder, e.g. model='sentence-transformers/all-MiniLM-L6-v2'."
        )
    if isinstance(model, (str, os.PathLike)):
        model, loaded_tokenizer = _load_encoder(model)
        tokenizer = tokenizer if tokenizer is not None else loaded_tokenizer
    if tokenizer is None:
        raise ValueError("`tokenizer` is required when `model` is a module: pass the model's tokenizer.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    texts = [str(t) for t in texts]
    ids_list = _encode(tokenizer, texts, add_special_tokens=True)
    if max_length is not None:
        ids_list = [ids[:max_length] for ids in ids_list]
    for i, ids in enumerate(ids_list):
        if not ids:
            raise ValueError(f"`texts[{i}]` tokenizes to no tokens; give it some text or drop it.")
    return _embed_ids(model, ids_list, _pad_id(tokenizer), batch_size, normalize, show_progress)


def _embed_ids(
    model: torch.nn.Module,
    ids_list: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int,
    normalize: bool,
    show_progress: bool,
) -> np.ndarray:
    """Mean-pooled last hidden states of token sequences (see [`embed`]), batched by length and right-padded."""
    n = len(ids_list)
    device = _model_device(model)
    kwargs: dict[str, Any] = {"output_hidden_states": True}
    if _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = 1
    if _accepts(model, "use_cache"):
        kwargs["use_cache"] = False
    lengths = np.fromiter((len(s) for s in ids_list), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")
    out: np.ndarray | None = None
    with torch.no_grad(), _EvalMode(model), tqdm(total=n, desc="embed", disable=not show_progress, unit="text") as bar:
        for b in range(0, n, batch_size):
            rows = order[b : b + batch_size]
            ids, mask = _right_padded(ids_list, rows, lengths, pad_id)
            outputs = model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
            hidden = getattr(outputs, "last_hidden_state", None)
            if hidden is None:
                hidden = outputs.hidden_states[-1]
            m = mask.to(device=hidden.device, dtype=torch.float32).unsqueeze(-1)
            pooled = (hidden.float() * m).sum(dim=1) / m.sum(dim=1)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            if out is None:
                out = np.empty((n, pooled.shape[-1]), dtype=np.float32)
            out[rows] = pooled.cpu().numpy()
            bar.update(len(rows))
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Clustering
# ---------------------------------------------------------------------------------------------------------------------


def _check_x(x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"`x` must be a numeric array of shape (N,) or (N, d), got dtype {arr.dtype}.")
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(f"`x` must have shape (N,) (e.g. IFD scores) or (N, d) (embeddings), got {arr.shape}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"`x` is empty (shape {arr.shape}); pass at least one sample with at least one feature.")
    if arr.dtype != np.float32 and arr.dtype != np.float64:
        arr = arr.astype(np.float64 if arr.shape[1] == 1 else np.float32)
    finite = np.isfinite(arr).all(axis=1) if arr.size <= 50_000_000 else _chunked_finite(arr)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"`x` holds NaN or inf in {bad.size} row(s) (first: row {int(bad[0])}); drop or fix those samples (a NaN "
            "IFD score usually means an empty answer; a NaN embedding, an overflow in half precision) and retry."
        )
    return np.ascontiguousarray(arr)


def _chunked_finite(arr: np.ndarray) -> np.ndarray:
    return np.concatenate([np.isfinite(arr[s : s + _CHUNK]).all(axis=1) for s in range(0, arr.shape[0], _CHUNK)])


def _check_k(k: Any, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"`k` must be an int, got {k!r}.")
    k = int(k)
    if k < 1:
        raise ValueError(f"`k` must be at least 1, got {k}; use the number of clusters (arms) you want, e.g. 7.")
    if k > n:
        raise ValueError(f"`k`={k} is larger than the number of samples ({n}); use k <= {n} (or add samples).")
    return k


def _check_seed(seed: Any) -> int:
    if seed is None:
        return 0
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int (or None for 0), got {seed!r}.")
    return int(seed)


def _check_method(method: Any) -> str:
    if method not in CLUSTER_METHODS:
        raise ValueError(f"`method`={method!r} is unknown; use one of {', '.join(map(repr, CLUSTER_METHODS))}.")
    return method


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    with warnings.catch_warnings():
        # fewer distinct points than k (ties in 1-D scores): sklearn warns and still returns k labels
        warnings.filterwarnings("ignore", message="Number of distinct clusters")
        if x.shape[0] * x.shape[1] <= KMEANS_FULL_MAX_ELEMENTS:
            model = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(x)
        else:
            model = MiniBatchKMeans(n_clusters=k, n_init=3, batch_size=4096, random_state=seed).fit(x)
    labels = model.labels_.astype(np.int64)
    if x.shape[1] == 1:  # 1-D scores: number clusters by increasing centre (cluster 0 = lowest scores)
        rank = np.empty(k, dtype=np.int64)
        rank[np.argsort(model.cluster_centers_[:, 0], kind="stable")] = np.arange(k)
        labels = rank[labels]
    return labels


def _pca(x: np.ndarray, dims: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    dims = min(dims, x.shape[1])
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(x.shape[0], PCA_FIT_SIZE, replace=False)) if x.shape[0] > PCA_FIT_SIZE else None
    sample = x if fit_rows is None else x[fit_rows]
    dims = min(dims, sample.shape[0])
    # covariance_eigh (scikit-learn >= 1.5): one pass to form the d x d covariance, fast when n >> d
    solver = "full" if sample.shape[0] < 2 * x.shape[1] else "covariance_eigh"
    try:
        pca = PCA(n_components=dims, svd_solver=solver, random_state=seed).fit(sample)
    except ValueError:  # older scikit-learn: no covariance_eigh
        pca = PCA(n_components=dims, svd_solver="full", random_state=seed).fit(sample)
    out = np.empty((x.shape[0], dims), dtype=np.float32)
    for s in range(0, x.shape[0], _CHUNK):
        out[s : s + _CHUNK] = pca.transform(x[s : s + _CHUNK])
    return out


def _umap(x: np.ndarray, seed: int, fit_size: int, show_progress: bool) -> np.ndarray:
    import umap  # imported lazily: numba compilation makes the import slow

    n = x.shape[0]
    if x.shape[1] > PCA_DIMS:
        x = _pca(x, PCA_DIMS, seed)
    dims = min(UMAP_DIMS, x.shape[1])
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, fit_size, replace=False)) if n > fit_size else np.arange(n)
    n_fit = fit_rows.shape[0]
    if n_fit < 3 * dims + 3:  # too few points for UMAP's spectral layout: PCA alone
        return _pca(x, dims, seed)
    reducer = umap.UMAP(n_components=dims, n_neighbors=min(15, n_fit - 1), min_dist=0.0, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        warnings.filterwarnings("ignore", message=".*Graph is not fully connected.*")
        fitted = reducer.fit_transform(x[fit_rows])
        out = np.empty((n, dims), dtype=np.float32)
        out[fit_rows] = fitted
        rest = np.setdiff1d(np.arange(n), fit_rows, assume_unique=True)
        with tqdm(
            total=rest.size, desc="umap transform", disable=not show_progress or rest.size == 0, unit="sample"
        ) as bar:
            for s in range(0, rest.size, _UMAP_TRANSFORM_CHUNK):
                rows = rest[s : s + _UMAP_TRANSFORM_CHUNK]
                out[rows] = reducer.transform(x[rows])
                bar.update(rows.size)
    return out


def cluster_embeddings(
    x: np.ndarray,
    k: int,
    method: str = "kmeans",
    seed: int | None = 0,
    umap_fit_size: int = 50_000,
    show_progress: bool = True,
) -> np.ndarray:
    r"""
    Cluster samples into `k` groups with scikit-learn's k-means, optionally after a dimension reduction.

    - `"kmeans"`: k-means on `x` as it is. The paper's choice for 1-D IFD scores.
    - `"pca-kmeans"`: PCA to 50 dims (fitted on at most 200k random rows, applied to all), then k-means.
    - `"umap-kmeans"`: PCA to 50 dims when `x` is wider, then UMAP (umap-learn; 5 dims, 15 neighbours,
      `min_dist=0`) fitted on at most `umap_fit_size` random rows, with `UMAP.transform` for the other rows (in
      chunks of 100k), then k-means.

    k-means is `sklearn.cluster.KMeans` when `n_samples * n_features` of what is clustered is at most
    `KMEANS_FULL_MAX_ELEMENTS` (10M) and `MiniBatchKMeans` (batches of 4096) above; both with 3 k-means++ inits.
    For 1-D input the labels are numbered by increasing cluster centre (label 0 = lowest scores).

    Args:
        x (`np.ndarray`):
            Shape `(N, d)` (embeddings) or `(N,)`/`(N, 1)` (1-D scores such as IFD); float32 is kept as float32.
        k (`int`):
            Number of clusters, `1 <= k <= N`.
        method (`str`, *optional*, defaults to `"kmeans"`):
            `"kmeans"`, `"pca-kmeans"` or `"umap-kmeans"` (see the table).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the subsampling, k-means and UMAP (`None` means 0: labels are always reproducible). UMAP then
            runs single-threaded, as umap-learn does whenever it is given a seed.
        umap_fit_size (`int`, *optional*, defaults to `50_000`):
            Most rows UMAP is fitted on; the others are placed with `UMAP.transform`.
        show_progress (`bool`, *optional*, defaults to `True`):
            Show a progress bar over the UMAP transform.

    Returns:
        `np.ndarray` of shape `(N,)`, int64 labels in `[0, k)`.

    Raises:
        `ValueError`: empty `x`, NaN/inf in `x`, `k < 1` or `k > N`, an unknown `method` (each message says what to
        change).
    """
    method = _check_method(method)
    seed = _check_seed(seed)
    x = _check_x(x)
    k = _check_k(k, x.shape[0])
    if not isinstance(umap_fit_size, int) or umap_fit_size < 2:
        raise ValueError(f"`umap_fit_size` must be an int >= 2, got {umap_fit_size!r}.")
    if k == 1:
        return np.zeros(x.shape[0], dtype=np.int64)
    if method == "pca-kmeans":
        x = _pca(x, PCA_DIMS, seed)
    elif method == "umap-kmeans":
        x = _umap(x, seed, umap_fit_size, show_progress)
    return _kmeans(x, k, seed)


# ---------------------------------------------------------------------------------------------------------------------
# Fingerprints and the disk cache
# ---------------------------------------------------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return {
            "ndarray": hashlib.sha256(arr.view(np.uint8).reshape(-1)).hexdigest(),
            "dtype": str(arr.dtype),
            "shape": list(arr.shape),
        }
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (bytes, bytearray)):
        return {"bytes": hashlib.sha256(obj).hexdigest()}
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return repr(obj)


def fingerprint(*parts: Any) -> str:
    """sha256 hex digest of `parts` (JSON-like values; numpy arrays and bytes are hashed by content)."""
    blob = json.dumps(parts, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _tensor_digest(h: Any, t: torch.Tensor, full_max_numel: int, sample_size: int) -> None:
    if t.device.type == "meta":
        h.update(b"meta")
        return
    flat = t.detach().reshape(-1)
    if flat.numel() <= full_max_numel:
        h.update(flat.contiguous().cpu().view(torch.uint8).numpy().tobytes())
        return
    step = max(1, flat.numel() // sample_size)
    h.update(flat[::step].contiguous().cpu().view(torch.uint8).numpy().tobytes())
    total = torch.zeros((), dtype=torch.float64, device=flat.device)
    for chunk in flat.split(1 << 24):
        total += chunk.sum(dtype=torch.float64)
    h.update(repr(total.item()).encode())


def model_fingerprint(model: torch.nn.Module, full_max_numel: int = 1 << 20, sample_size: int = 4096) -> str:
    r"""
    sha256 of a model: its class, its config (and PEFT config), and every state-dict tensor's name, dtype and shape
    plus a hash of its values.

    Tensors of at most `full_max_numel` elements (all of a tiny model, LoRA adapters, norms, biases) are hashed byte
    for byte, so any change is seen. Larger tensors are hashed by `sample_size` evenly strided elements and the
    float64 sum of all their elements: it costs one read of the weights (seconds for a 7B model on a GPU) instead
    of hashing every byte, and it misses only a change that avoids every sampled element and leaves the sum unchanged
    to float64 precision (no optimizer update does). Tensors on the `meta` device are hashed by name and shape.

    Args:
        model (`torch.nn.Module`): The model.
        full_max_numel (`int`, *optional*, defaults to `2**20`): Largest tensor hashed in full.
        sample_size (`int`, *optional*, defaults to `4096`): Strided elements hashed of a larger tensor.

    Returns:
        `str`, 64 hex digits.
    """
    h = hashlib.sha256()
    h.update(type(_unwrap(model)).__qualname__.encode())
    config = getattr(model, "config", None)
    if config is not None:
        try:
            h.update(config.to_json_string(use_diff=False).encode())
        except Exception:  # noqa: BLE001 - exotic configs: fall back to their repr
            h.update(repr(config).encode())
    peft_config = getattr(model, "peft_config", None)
    if peft_config is not None:
        h.update(repr(peft_config).encode())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
            _tensor_digest(h, tensor, full_max_numel, sample_size)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of a tokenizer's class, vocabulary, special tokens, chat template and padding/truncation sides."""
    h = hashlib.sha256()
    h.update(type(tokenizer).__qualname__.encode())
    try:
        vocab = tokenizer.get_vocab()
        h.update(json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), default=str).encode())
    except Exception:  # noqa: BLE001 - tokenizers without get_vocab
        h.update(repr(getattr(tokenizer, "vocab_size", None)).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    h.update(json.dumps(getattr(tokenizer, "special_tokens_map", {}), sort_keys=True, default=str).encode())
    h.update(json.dumps(getattr(tokenizer, "chat_template", None), sort_keys=True, default=str).encode())
    return h.hexdigest()


def dataset_fingerprint(dataset: Any) -> str:
    """The dataset's `_fingerprint` (Hugging Face `datasets` updates it on every change) when it has one, else the
    sha256 of every row serialised as JSON."""
    fp = getattr(dataset, "_fingerprint", None)
    if isinstance(fp, str) and fp:
        return f"datasets:{fp}:{_num_rows(dataset)}"
    h = hashlib.sha256()
    for row in dataset:
        h.update(json.dumps(row, sort_keys=True, default=_json_default).encode())
        h.update(b"\n")
    return h.hexdigest()


def cached(
    name: str,
    parts: Any,
    compute: Callable[[], np.ndarray],
    cache_dir: str | os.PathLike | None = None,
    enabled: bool = True,
) -> np.ndarray:
    r"""
    Return the array stored under `name` and the fingerprint of `parts`, or compute, store and return it.

    The file is `<cache_dir>/<name>/<sha256(parts)>.npy`, written to a temporary file in the same directory and moved
    into place with `os.replace`, so a reader never sees a partial file and concurrent writers (ranks) are safe. An
    unreadable entry is recomputed.

    Args:
        name (`str`): What is cached (`"ifd"`, `"labels"`...); a subdirectory.
        parts (`Any`): Everything the value depends on (fingerprints, settings), JSON-like.
        compute (`Callable[[], np.ndarray]`): Computes the value on a miss.
        cache_dir (`str` or `os.PathLike`, *optional*): See [`cache_dir_path`].
        enabled (`bool`, *optional*, defaults to `True`): `False` always computes and stores nothing.

    Returns:
        `np.ndarray`.
    """
    if not enabled:
        return compute()
    path = cache_dir_path(cache_dir) / name / f"{fingerprint(parts)}.npy"
    if path.exists():
        try:
            value = np.load(path, allow_pickle=False)
            logger.info("trl-lead cache hit: %s", path)
            return value
        except (OSError, ValueError) as err:
            logger.warning("trl-lead cache entry %s is unreadable (%s); recomputing it.", path, err)
    value = np.asarray(compute())
    _save_atomic(path, value)
    return value


def _save_atomic(path: Path, value: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        np.save(f, value, allow_pickle=False)


def _cache_lookup(name: str, parts: Any, cache_dir: str | os.PathLike | None, enabled: bool) -> np.ndarray | None:
    if not enabled:
        return None
    path = cache_dir_path(cache_dir) / name / f"{fingerprint(parts)}.npy"
    try:
        return np.load(path, allow_pickle=False) if path.exists() else None
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------------------------------


def compute_clusters(
    model: torch.nn.Module | None,
    tokenizer: Any,
    dataset: Any,
    how: str = "ifd",
    k: int = 7,
    seed: int | None = 0,
    cache_dir: str | os.PathLike | None = None,
    conditional_losses: np.ndarray | Sequence[float] | None = None,
    method: str | None = None,
    batch_size: int = 16,
    max_length: int | None = None,
    encoder: str | os.PathLike | None = None,
    umap_fit_size: int = 50_000,
    use_cache: bool = True,
    show_progress: bool = True,
    return_features: bool = False,
    append_eos: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r"""
    Cluster labels for every sample of `dataset`: the arms of LEAD. Cached on disk (see [`cached`]).

    - `how="ifd"` (the paper): 1-D IFD scores under `model` ([`ifd_scores`]) clustered with `method="kmeans"`
      (the only method allowed for 1-D scores).
    - `how="embedding"`: L2-normalised mean-pooled last hidden states of `model`, or of `encoder` when given
      ([`embed`] over [`sample_texts`]); default `method="umap-kmeans"`.

    The cache holds the features (IFD scores; embeddings up to 2 GiB) and the labels separately, so changing `k`,
    `method` or `seed` reuses the scores. Keys: [`model_fingerprint`] (or the encoder's name),
    [`tokenizer_fingerprint`], [`dataset_fingerprint`], `batch_size`, `max_length`, the hash of
    `conditional_losses`, and for the labels `k`, `method`, `seed`, `umap_fit_size`.

    Args:
        model (`torch.nn.Module`):
            The training (warm-up) causal LM. May be `None` only with `how="embedding"` and an `encoder`.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer (needs a chat template for conversational rows).
        dataset (`datasets.Dataset` or `Sequence[dict]`):
            Rows with `messages` or `prompt`/`completion` (`"embedding"` also accepts `text`).
        how (`str`, *optional*, defaults to `"ifd"`):
            `"ifd"` or `"embedding"` (see the table).
        k (`int`, *optional*, defaults to `7`):
            Number of clusters (the paper: 7).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the clustering; `None` means 0 (the labels are cached, so they must be reproducible).
        cache_dir (`str` or `os.PathLike`, *optional*):
            Cache directory; default `$TRL_LEAD_CACHE` or `~/.cache/trl_lead`.
        conditional_losses (`np.ndarray`, *optional*):
            Per-sample CE(answer | instruction) from the trainer's initial scoring pass; reused by IFD instead of
            being computed again ([`ifd_scores`]).
        method (`str`, *optional*):
            A [`cluster_embeddings`] method; default per the table.
        batch_size (`int`, *optional*, defaults to `16`):
            Samples per forward pass.
        max_length (`int`, *optional*):
            Token limit per sample (IFD: see [`answer_losses`]; embeddings: 512 when `None`).
        encoder (`str` or `os.PathLike`, *optional*):
            With `how="embedding"`: a Hugging Face encoder name/path to embed with instead of `model`.
        umap_fit_size (`int`, *optional*, defaults to `50_000`):
            Rows UMAP is fitted on (see [`cluster_embeddings`]).
        use_cache (`bool`, *optional*, defaults to `True`):
            `False` neither reads nor writes the cache.
        show_progress (`bool`, *optional*, defaults to `True`):
            Show progress bars.
        return_features (`bool`, *optional*, defaults to `False`):
            Also return the features that were clustered (IFD scores `(N,)` or embeddings `(N, d)`), e.g. for
            [`plot_clusters_2d`].
        append_eos (`bool`, *optional*, defaults to `False`):
            With `how="ifd"`: score the EOS token after each answer too (see [`answer_losses`]); set it when
            `conditional_losses` come from a trainer whose trained tokens end with EOS.

    Returns:
        `np.ndarray` of shape `(len(dataset),)`, int64 labels in `[0, k)`; with `return_features`, `(labels,
        features)`.
    """
    if how not in ("ifd", "embedding"):
        raise ValueError(f"`how`={how!r} is unknown; use 'ifd' (IFD scores, the paper) or 'embedding'.")
    if method is None:
        method = "kmeans" if how == "ifd" else "umap-kmeans"
    _check_method(method)
    if how == "ifd" and method != "kmeans":
        raise ValueError(
            f"`method`={method!r} reduces embeddings; IFD scores are 1-D and clustered with "
            "method='kmeans' (or use how='embedding')."
        )
    n = _num_rows(dataset)
    k = _check_k(k, n)
    seed = _check_seed(seed)
    _check_scoring_args(batch_size, max_length)
    if model is None and not (how == "embedding" and encoder is not None):
        raise ValueError("`model` is required (or, with how='embedding', an `encoder` name).")
    if conditional_losses is not None:
        conditional_losses = _check_losses(conditional_losses, n)

    data_fp = dataset_fingerprint(dataset)
    if how == "ifd":
        feature_parts = {
            "v": _CACHE_VERSION,
            "what": "ifd",
            "model": model_fingerprint(model),
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "data": data_fp,
            "batch_size": batch_size,
            "max_length": max_length,
            "conditional_losses": conditional_losses,
            "append_eos": append_eos,
        }

        def features_fn() -> np.ndarray:
            return ifd_scores(
                model, tokenizer, dataset, batch_size, max_length, show_progress, conditional_losses, append_eos
            )

        feature_name = "ifd"
    else:
        embed_max_length = max_length if max_length is not None else 512
        feature_parts = {
            "v": _CACHE_VERSION,
            "what": "embedding",
            "model": os.fspath(encoder) if encoder is not None else model_fingerprint(model),
            "tokenizer": None if encoder is not None else tokenizer_fingerprint(tokenizer),
            "data": data_fp,
            "batch_size": batch_size,
            "max_length": embed_max_length,
            "normalize": True,
        }

        def features_fn() -> np.ndarray:
            texts = sample_texts(dataset)
            if encoder is not None:
                return embed(texts, encoder, None, batch_size, embed_max_length, True, show_progress)
            return embed(texts, model, tokenizer, batch_size, embed_max_length, True, show_progress)

        feature_name = "embeddings"

    labels, get_features = _cached_clusters(
        feature_name, feature_parts, features_fn, k, method, seed, umap_fit_size, cache_dir, use_cache, show_progress
    )
    if return_features:
        return labels, get_features()
    return labels


def _cached_clusters(
    feature_name: str,
    feature_parts: dict[str, Any],
    features_fn: Callable[[], np.ndarray],
    k: int,
    method: str,
    seed: int,
    umap_fit_size: int,
    cache_dir: str | os.PathLike | None,
    use_cache: bool,
    show_progress: bool,
) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
    """Cluster labels of `features_fn()` (both cached: the features up to 2 GiB, the labels always), and a function
    returning the features (computed or read from the cache only when called, or when the labels miss the cache)."""
    label_parts = {
        "v": _CACHE_VERSION,
        "what": "labels",
        "features": feature_parts,
        "k": k,
        "method": method,
        "seed": seed,
        "umap_fit_size": umap_fit_size if method == "umap-kmeans" else None,
    }
    features: np.ndarray | None = None

    def get_features() -> np.ndarray:
        nonlocal features
        if features is None:
            features = _cache_lookup(feature_name, feature_parts, cache_dir, use_cache)
        if features is None:
            features = np.asarray(features_fn())
            if use_cache and features.nbytes <= _EMBEDDING_CACHE_MAX_BYTES:
                _save_atomic(cache_dir_path(cache_dir) / feature_name / f"{fingerprint(feature_parts)}.npy", features)
        return features

    labels = cached(
        "labels",
        label_parts,
        lambda: cluster_embeddings(get_features(), k, method, seed, umap_fit_size, show_progress),
        cache_dir,
        use_cache,
    )
    return labels, get_features


# ---------------------------------------------------------------------------------------------------------------------
# Clusters of a trainer's processed pool: from the tokens and labels it trains on
# ---------------------------------------------------------------------------------------------------------------------

IGNORE_INDEX = -100
"""Label of a token that is not trained (TRL's and transformers' convention)."""


@dataclass
class PoolClusters:
    """Cluster labels of a processed pool ([`pool_clusters`]) and what they were computed from.

    Attributes:
        labels (`np.ndarray`): int64 labels in `[0, k)`, one per sample.
        feature (`str`): `"ifd"`, `"initial_loss"` (the fallback where IFD is undefined) or `"embedding"`.
        samples_without_prompt (`int`): samples whose every token is trained, so that IFD is undefined for them.
    """

    labels: np.ndarray
    feature: str
    samples_without_prompt: int

    def describe(self) -> dict[str, Any]:
        return {"feature": self.feature, "samples_without_prompt": self.samples_without_prompt}


def trained_tokens(
    input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]] | None
) -> tuple[list[list[int]], np.ndarray]:
    """The trained tokens of every sequence and whether the sequence has a prompt.

    A token is trained where its label is not `-100`, at positions `t >= 1` (a causal LM never predicts the first
    token). A sequence has a prompt when its first token is not trained: prompt/completion rows with
    `completion_only_loss`, conversations with `assistant_only_loss`. `labels=None` means every token is trained (TRL's
    collator uses the input ids as labels then).
    """
    answers, has_prompt = [], np.zeros(len(input_ids), dtype=bool)
    for i, ids in enumerate(input_ids):
        row_labels = ids if labels is None else labels[i]
        answers.append([int(t) for t, label in zip(ids[1:], row_labels[1:]) if label != IGNORE_INDEX])
        has_prompt[i] = len(row_labels) > 0 and row_labels[0] == IGNORE_INDEX
    return answers, has_prompt


def pool_clusters(
    model: torch.nn.Module,
    tokenizer: Any,
    input_ids: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]] | None,
    conditional_losses: np.ndarray | Sequence[float] | None = None,
    how: str = "ifd",
    k: int = 7,
    seed: int | None = 0,
    batch_size: int = 16,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    show_progress: bool = True,
) -> PoolClusters:
    r"""
    Cluster labels of a pool as a trainer processed it: its token ids and labels (the answer tokens are those whose
    label is not `-100`), so any input `SFTTrainer` accepts can be clustered (prompt/completion, conversational,
    language modeling, pre-tokenized rows, a formatting function's output). Cached like [`compute_clusters`].

    - `how="ifd"`: IFD = `conditional_losses` (the mean loss of each sample's trained tokens given everything before
      them: the trainer's initial scoring pass) / the loss of the same tokens alone (after the tokenizer's BOS token,
      EOS when it has none), clustered by 1-D k-means. IFD needs a prompt: where some sample has none (every token
      trained, as in language-modeling rows, where both losses are the same and IFD is 1), the pool is clustered on
      `conditional_losses` instead, with the same k-means (`feature="initial_loss"`), and a warning says so.
    - `how="embedding"`: mean-pooled last hidden states of `model` over each sequence (its first 512 tokens),
      L2-normalised, clustered with `"umap-kmeans"`.

    Args:
        model (`torch.nn.Module`):
            The training causal LM (optionally wrapped by PEFT).
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer (for the BOS/EOS token that starts an answer scored alone, and the padding token).
        input_ids (`Sequence[Sequence[int]]`):
            Token ids of every sample.
        labels (`Sequence[Sequence[int]]`, *optional*):
            Labels of every sample, `-100` where a token is not trained; `None`: every token is trained.
        conditional_losses (`np.ndarray`, *optional*):
            Required with `how="ifd"`: each sample's mean loss over its trained tokens, in the order of `input_ids`.
        how (`str`, *optional*, defaults to `"ifd"`):
            `"ifd"` or `"embedding"`.
        k (`int`, *optional*, defaults to `7`):
            Number of clusters.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the clustering (`None` means 0).
        batch_size (`int`, *optional*, defaults to `16`):
            Sequences per forward pass.
        cache_dir (`str` or `os.PathLike`, *optional*):
            Cache directory; default `$TRL_LEAD_CACHE` or `~/.cache/trl_lead`.
        use_cache (`bool`, *optional*, defaults to `True`):
            `False` neither reads nor writes the cache.
        show_progress (`bool`, *optional*, defaults to `True`):
            Show progress bars.

    Returns:
        [`PoolClusters`].
    """
    if how not in ("ifd", "embedding"):
        raise ValueError(f"`how`={how!r} is unknown; use 'ifd' (IFD scores, the paper) or 'embedding'.")
    n = len(input_ids)
    k, seed = _check_k(k, n), _check_seed(seed)
    _check_scoring_args(batch_size, None)
    answers, has_prompt = trained_tokens(input_ids, labels)
    empty = [i for i, answer in enumerate(answers) if not answer]
    if empty:
        raise ValueError(f"{len(empty)} samples have no trained token (e.g. {empty[:5]}); drop them to cluster.")
    without_prompt = int((~has_prompt).sum())
    digest = hashlib.sha256()
    for i, ids in enumerate(input_ids):
        digest.update(np.asarray(ids, dtype=np.int64).tobytes() + b"|" + np.asarray(answers[i], np.int64).tobytes())
    parts = {
        "v": _CACHE_VERSION,
        "model": model_fingerprint(model),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "tokens": digest.hexdigest(),
        "batch_size": batch_size,
    }
    if how == "embedding":
        feature, method = "embedding", "umap-kmeans"
        parts.update(what="pool_embedding", max_length=512)

        def features_fn() -> np.ndarray:
            sequences = [list(ids[:512]) for ids in input_ids]
            return _embed_ids(model, sequences, _pad_id(tokenizer), batch_size, True, show_progress)

    else:
        if conditional_losses is None:
            raise ValueError("`how='ifd'` needs `conditional_losses` (the trainer's initial scoring pass).")
        conditional = _check_losses(conditional_losses, n)
        feature, method = ("ifd" if without_prompt == 0 else "initial_loss"), "kmeans"
        parts.update(what=f"pool_{feature}", conditional_losses=conditional)

        def features_fn() -> np.ndarray:
            if feature == "initial_loss":
                return conditional
            alone = _alone_losses(model, tokenizer, (None, answers), batch_size, None, show_progress)
            return conditional / np.maximum(alone, 1e-12)

        if feature == "initial_loss":
            logger.warning(
                "lead_clusters='ifd': %d of %d samples have no prompt (every token is trained, as in language-"
                "modeling rows), so their IFD is undefined; clustering the pool by its initial loss instead (k-means "
                "on each sample's loss under the model before training).",
                without_prompt,
                n,
            )
    labels_out, _ = _cached_clusters(
        feature, parts, features_fn, k, method, seed, 50_000, cache_dir, use_cache, show_progress
    )
    logger.info("LEAD clusters: %d clusters of %d samples from %s.", k, n, feature)
    return PoolClusters(np.asarray(labels_out, dtype=np.int64), feature, without_prompt)


# ---------------------------------------------------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------------------------------------------------


def plot_clusters_2d(
    x: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike,
    max_points: int = 20_000,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    r"""
    Write a PNG showing the clusters, so a user can look at what the arms are.

    - 2-D or wider `x` (embeddings): a 2-D UMAP (PCA to 50 dims first when wider) of at most `max_points` random
      samples, one colour per cluster; 2-D `x` is drawn as it is. Fewer than 10 samples: PCA instead of UMAP.
    - 1-D `x` (IFD scores): a UMAP of one dimension says nothing more than the scores themselves, so the plot is a
      histogram of the scores stacked by cluster, with a jittered strip plot of the (subsampled) samples below it.

    Args:
        x (`np.ndarray`): Features, shape `(N,)`, `(N, 1)` or `(N, d)`.
        labels (`np.ndarray`): Cluster of each sample, shape `(N,)`.
        path (`str` or `os.PathLike`): Output PNG; written to a temporary file and renamed into place.
        max_points (`int`, *optional*, defaults to `20_000`): Samples drawn (a random subset when N is larger).
        seed (`int`, *optional*, defaults to `0`): Seed of the subsample and of UMAP.
        title (`str`, *optional*): Figure title.

    Returns:
        `pathlib.Path` of the PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = _check_x(x)
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(
            f"`labels` has {labels.shape[0]} entries but `x` has {x.shape[0]} rows; pass one label per row."
        )
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(x.shape[0], max_points, replace=False)) if x.shape[0] > max_points else None
    xs, ls = (x, labels) if rows is None else (x[rows], labels[rows])
    clusters = np.unique(labels)
    fig = Figure(figsize=(7, 6), dpi=120)
    FigureCanvasAgg(fig)
    colors = [_color(i, len(clusters)) for i in range(len(clusters))]
    if x.shape[1] == 1:
        ax, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        values = [x[labels == c, 0] for c in clusters]
        ax.hist(
            values,
            bins=60,
            stacked=True,
            color=colors,
            label=[f"cluster {c} (n={v.size})" for c, v in zip(clusters, values)],
        )
        ax.set_ylabel("samples")
        ax.legend(fontsize=8)
        for i, c in enumerate(clusters):
            sel = ls == c
            ax2.scatter(xs[sel, 0], rng.uniform(-0.4, 0.4, sel.sum()), s=2, color=colors[i], alpha=0.5)
        ax2.set_yticks([])
        ax2.set_xlabel("score (IFD)")
    else:
        if xs.shape[1] == 2:
            xy = xs
        elif xs.shape[0] < 10:
            xy = _pca(xs, 2, seed)
        else:
            import umap

            z = _pca(xs, PCA_DIMS, seed) if xs.shape[1] > PCA_DIMS else xs
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
                xy = umap.UMAP(n_components=2, n_neighbors=min(15, xs.shape[0] - 1), random_state=seed).fit_transform(
                    z
                )
        ax = fig.subplots()
        for i, c in enumerate(clusters):
            sel = ls == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=3, color=colors[i], alpha=0.6, label=f"cluster {c}")
        ax.legend(markerscale=4, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1" if xs.shape[1] > 2 else "x0")
        ax.set_ylabel("UMAP 2" if xs.shape[1] > 2 else "x1")
    shown = xs.shape[0]
    fig.suptitle(title or f"{len(clusters)} clusters, {shown} of {x.shape[0]} samples shown")
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


def _color(i: int, n: int) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    return cmap(i % cmap.N if n <= 20 else i / max(n - 1, 1))
