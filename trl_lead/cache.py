# Copyright 2026 The trl-lead authors. Licensed under the Apache License, Version 2.0.
"""The disk cache of LEAD's clusters: fingerprints of what a value depends on, and [`cached`].

A cached array lives at `<cache_dir>/<name>/<sha256 of its parts>.npy`; the parts hold fingerprints of the model
([`model_fingerprint`]), the tokenizer ([`tokenizer_fingerprint`]), the data ([`dataset_fingerprint`]) and the
settings, so a changed input misses. The directory is [`trl_lead.files.cache_dir_path`] (`$TRL_LEAD_CACHE`, default
`~/.cache/trl_lead`) and files are written with [`trl_lead.files.atomic_write`].
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .files import atomic_write, cache_dir_path
from .scoring import num_rows, unwrap_model

logger = logging.getLogger(__name__)

__all__ = ["cached", "dataset_fingerprint", "fingerprint", "model_fingerprint", "tokenizer_fingerprint"]


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
    h.update(type(unwrap_model(model)).__qualname__.encode())
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
        return f"datasets:{fp}:{num_rows(dataset)}"
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
    max_bytes: int | None = None,
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
        max_bytes (`int`, *optional*): A computed value larger than this is returned but not stored.

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
    if max_bytes is None or value.nbytes <= max_bytes:
        with atomic_write(path, "wb") as f:
            np.save(f, value, allow_pickle=False)
    return value
