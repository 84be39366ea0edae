# Copyright 2026 The trl-lead authors. Licensed under the Apache License, Version 2.0.
"""What LEAD's clusters are computed from: per-sample losses, IFD difficulty scores and sentence embeddings.

- [`answer_losses`]: the mean loss of each sample's answer given its instruction (the paper's initial IU);
- [`ifd_scores`]: the Instruction-Following Difficulty, that loss divided by the loss of the answer alone;
- [`embed`]: mean-pooled last hidden states of a model, over [`sample_texts`];
- [`trained_tokens`]: the answer of each sequence a trainer processed (its tokens whose label is not -100).

Rows are conversational (`messages`) or prompt/completion; everything runs on the model the user passes (nothing is
downloaded). [`trl_lead.clustering`] clusters these features and caches them on disk.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = [
    "IGNORE_INDEX",
    "answer_alone_inputs",
    "answer_losses",
    "embed",
    "ifd_scores",
    "sample_texts",
    "trained_tokens",
]

IGNORE_INDEX = -100
"""Label of a token that is not trained (TRL's and transformers' convention)."""


# ---------------------------------------------------------------------------------------------------------------------
# Reading rows: conversational (`messages`) or prompt/completion
# ---------------------------------------------------------------------------------------------------------------------


def num_rows(dataset: Any) -> int:
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
    num_rows(dataset)
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


def unwrap_model(model: Any) -> Any:
    """The model whose `forward` signature tells which arguments are accepted (under DDP and PEFT wrappers)."""
    inner = getattr(model, "module", None)  # DistributedDataParallel
    if isinstance(inner, torch.nn.Module):
        model = inner
    get_base = getattr(model, "get_base_model", None)  # peft
    return get_base() if callable(get_base) else model


def _accepts(model: Any, name: str) -> bool:
    try:
        return name in inspect.signature(unwrap_model(model).forward).parameters
    except (TypeError, ValueError):
        return False


def padding_id(tokenizer: Any) -> int:
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


def check_scoring_args(batch_size: int, max_length: int | None) -> None:
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
    check_scoring_args(batch_size, max_length)
    num_rows(dataset)
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
    return _sequence_losses(
        model, seqs, starts, padding_id(tokenizer), batch_size, "answer | instruction", show_progress
    )


def _alone_prefix(tokenizer: Any) -> list[int]:
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return [int(value)]
    return []


def answer_alone_inputs(
    tokenizer: Any, answers: Sequence[Sequence[int]], max_length: int | None = None
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and labels that score each answer alone: IFD's denominator.

    The answer follows the tokenizer's BOS token (EOS when it has no BOS), and every answer token is labelled; with
    neither token the answer's first token starts the sequence unscored. `max_length` keeps the first
    `max_length - 1` answer tokens. The labels follow TRL's convention (`-100`: not scored), so the sequences can go
    through a trainer's collator and forward."""
    prefix = _alone_prefix(tokenizer)
    input_ids, labels = [], []
    for i, answer in enumerate(answers):
        answer = list(answer) if max_length is None else list(answer[: max_length - 1])
        if not prefix and len(answer) < 2:
            raise ValueError(
                f"Row {i}: the answer is one token and the tokenizer has no BOS or EOS token to start it from, so "
                "its loss alone is undefined. Set `tokenizer.bos_token`, or drop the row."
            )
        ids = prefix + answer
        input_ids.append(ids)
        labels.append([IGNORE_INDEX] + ids[1:])
    return input_ids, labels


def answer_alone_losses(model, tokenizer, pairs, batch_size, max_length, show_progress) -> np.ndarray:
    seqs, _ = answer_alone_inputs(tokenizer, pairs[1], max_length)
    starts = [1] * len(seqs)
    return _sequence_losses(model, seqs, starts, padding_id(tokenizer), batch_size, "answer alone", show_progress)


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
    check_scoring_args(batch_size, max_length)
    n = num_rows(dataset)
    pairs = _encode_pairs(tokenizer, dataset, append_eos)
    if conditional_losses is None:
        conditional = _conditional_losses(model, tokenizer, pairs, batch_size, max_length, show_progress)
    else:
        conditional = check_losses(conditional_losses, n)
    alone = answer_alone_losses(model, tokenizer, pairs, batch_size, max_length, show_progress)
    return conditional / np.maximum(alone, 1e-12)


def check_losses(losses: Any, n: int) -> np.ndarray:
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


def embed(
    texts: Sequence[str],
    model: torch.nn.Module | None = None,
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
        model (`torch.nn.Module`):
            The model to embed with: the training model itself (a causal LM: its final hidden states are used, its
            logits are not computed beyond one position) or any `AutoModel` encoder the caller has loaded.
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer.
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
            "`model` is required: pass the model to embed with (e.g. the training model) and its `tokenizer`."
        )
    if tokenizer is None:
        raise ValueError("`tokenizer` is required: pass the model's tokenizer.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    texts = [str(t) for t in texts]
    ids_list = _encode(tokenizer, texts, add_special_tokens=True)
    if max_length is not None:
        ids_list = [ids[:max_length] for ids in ids_list]
    for i, ids in enumerate(ids_list):
        if not ids:
            raise ValueError(f"`texts[{i}]` tokenizes to no tokens; give it some text or drop it.")
    return embed_ids(model, ids_list, padding_id(tokenizer), batch_size, normalize, show_progress)


def embed_ids(
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
# The trained tokens of a processed pool
# ---------------------------------------------------------------------------------------------------------------------


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
        if labels is None:
            answers.append([int(t) for t in ids[1:]])
            continue
        row_ids, row_labels = np.asarray(ids, dtype=np.int64), np.asarray(labels[i], dtype=np.int64)
        answers.append(row_ids[1:][row_labels[1:] != IGNORE_INDEX].tolist())  # numpy: a pool has millions of tokens
        has_prompt[i] = len(row_labels) > 0 and row_labels[0] == IGNORE_INDEX
    return answers, has_prompt
