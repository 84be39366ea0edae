# Copyright 2026 The trl-lead authors. Licensed under the Apache License, Version 2.0.
"""Clusters for LEAD's arms: k-means (optionally after PCA or UMAP) on IFD scores or embeddings, cached on disk.

LEAD (arXiv 2505.07437) treats clusters of the training pool as the arms of a bandit. When the user brings no cluster
column, this module computes one:

- `lead_clusters="ifd"` (the paper): the Instruction-Following Difficulty of every sample under the (warm-up) model,
  clustered in 1-D by k-means into K=7 ([`trl_lead.scoring.ifd_scores`], [`trl_lead.kmeans.cluster_embeddings`]);
- `lead_clusters="embedding"`: mean-pooled hidden states of the training model, reduced by PCA or UMAP and clustered
  by k-means ([`trl_lead.scoring.embed`], [`trl_lead.kmeans.cluster_embeddings`]).

[`pool_clusters`] (what the trainer calls, on the token ids and labels it trains on) and [`compute_clusters`] (what
`trl-lead cluster` calls, on dataset rows) cache the features and the labels on disk under a fingerprint of the model,
the tokenizer, the data and the settings ([`trl_lead.cache.cached`]), so a second run of the same job does not score
again. [`plot_clusters_2d`] draws the clusters.

Only torch, transformers, numpy, scikit-learn, umap-learn, matplotlib and tqdm are used; nothing is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import cached, dataset_fingerprint, model_fingerprint, tokenizer_fingerprint
from .files import atomic_write
from .kmeans import (
    PCA_DIMS,
    cell_groups,
    check_features,
    check_k,
    check_method,
    check_seed,
    cluster_embeddings,
    pca_reduce,
)
from .scoring import (
    IGNORE_INDEX,
    answer_alone_losses,
    check_losses,
    check_scoring_args,
    embed,
    embed_ids,
    ifd_scores,
    num_rows,
    padding_id,
    sample_texts,
    trained_tokens,
)

logger = logging.getLogger(__name__)

__all__ = [
    "compute_clusters",
    "embedding_groups",
    "plot_clusters_2d",
    "pool_clusters",
    "PoolClusters",
    "prompt_groups",
]

_CACHE_VERSION = 1  # bump when a cached quantity's definition changes
_FEATURE_CACHE_MAX_BYTES = 2 * 1024**3  # larger features (1.4M x 384 float32 embeddings) are recomputed, not cached


# ---------------------------------------------------------------------------------------------------------------------
# The entry points: clusters of dataset rows, and the cache they share with the trainer's
# ---------------------------------------------------------------------------------------------------------------------


def compute_clusters(
    model: torch.nn.Module,
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
    umap_fit_size: int = 50_000,
    use_cache: bool = True,
    show_progress: bool = True,
    return_features: bool = False,
    append_eos: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r"""
    Cluster labels for every sample of `dataset`: the arms of LEAD. Cached on disk (see [`trl_lead.cache.cached`]).

    - `how="ifd"` (the paper): 1-D IFD scores under `model` ([`trl_lead.scoring.ifd_scores`]) clustered with
      `method="kmeans"` (the only method allowed for 1-D scores).
    - `how="embedding"`: L2-normalised mean-pooled last hidden states of `model` ([`trl_lead.scoring.embed`] over
      [`trl_lead.scoring.sample_texts`]); default `method="umap-kmeans"`.

    The cache holds the features (IFD scores; embeddings up to 2 GiB) and the labels separately, so changing `k`,
    `method` or `seed` reuses the scores. Keys: the fingerprints of the model, the tokenizer and the dataset
    ([`trl_lead.cache`]), `batch_size`, `max_length`, the hash of `conditional_losses`, and for the labels `k`,
    `method`, `seed`, `umap_fit_size`.

    Args:
        model (`torch.nn.Module`):
            The training (warm-up) causal LM.
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
            being computed again ([`trl_lead.scoring.ifd_scores`]).
        method (`str`, *optional*):
            A [`cluster_embeddings`] method; default per the table.
        batch_size (`int`, *optional*, defaults to `16`):
            Samples per forward pass.
        max_length (`int`, *optional*):
            Token limit per sample (IFD: see [`trl_lead.scoring.answer_losses`]; embeddings: 512 when `None`).
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
            With `how="ifd"`: score the EOS token after each answer too (see [`trl_lead.scoring.answer_losses`]); set
            it when `conditional_losses` come from a trainer whose trained tokens end with EOS.

    Returns:
        `np.ndarray` of shape `(len(dataset),)`, int64 labels in `[0, k)`; with `return_features`, `(labels,
        features)`.
    """
    _check_how(how)
    method = check_method(method if method is not None else "kmeans" if how == "ifd" else "umap-kmeans")
    if how == "ifd" and method != "kmeans":
        raise ValueError(
            f"`method`={method!r} reduces embeddings; IFD scores are 1-D and clustered with "
            "method='kmeans' (or use how='embedding')."
        )
    n = num_rows(dataset)
    k, seed = check_k(k, n), check_seed(seed)
    check_scoring_args(batch_size, max_length)
    if model is None:
        raise ValueError("`model` is required: pass the training (warm-up) causal LM and its `tokenizer`.")
    if conditional_losses is not None:
        conditional_losses = check_losses(conditional_losses, n)

    parts = {
        "v": _CACHE_VERSION,
        "what": how,
        "model": model_fingerprint(model),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "data": dataset_fingerprint(dataset),
        "batch_size": batch_size,
    }
    if how == "ifd":
        name = "ifd"
        parts.update(max_length=max_length, conditional_losses=conditional_losses, append_eos=append_eos)

        def compute() -> np.ndarray:
            return ifd_scores(
                model, tokenizer, dataset, batch_size, max_length, show_progress, conditional_losses, append_eos
            )

    else:
        name, max_length = "embeddings", (512 if max_length is None else max_length)
        parts.update(max_length=max_length, normalize=True)

        def compute() -> np.ndarray:
            return embed(sample_texts(dataset), model, tokenizer, batch_size, max_length, True, show_progress)

    labels, features = _cached_labels(
        name, parts, compute, k, method, seed, umap_fit_size, cache_dir, use_cache, show_progress
    )
    return (labels, features()) if return_features else labels


def _check_how(how: Any) -> None:
    if how not in ("ifd", "embedding"):
        raise ValueError(f"`how`={how!r} is unknown; use 'ifd' (IFD scores, the paper) or 'embedding'.")


def _cached_labels(
    feature_name: str,
    feature_parts: dict[str, Any],
    compute_features: Callable[[], np.ndarray],
    k: int,
    method: str,
    seed: int,
    umap_fit_size: int,
    cache_dir: str | os.PathLike | None,
    use_cache: bool,
    show_progress: bool,
) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
    """Cluster labels of `compute_features()`, cached under `"labels"`, and a function returning the features, cached
    under `feature_name` (up to 2 GiB). The features are read or computed only when that function is called: when the
    labels miss the cache, or when the caller wants them."""

    @functools.cache
    def features() -> np.ndarray:
        return cached(feature_name, feature_parts, compute_features, cache_dir, use_cache, _FEATURE_CACHE_MAX_BYTES)

    label_parts = {
        "v": _CACHE_VERSION,
        "what": "labels",
        "features": feature_parts,
        "k": k,
        "method": method,
        "seed": seed,
        "umap_fit_size": umap_fit_size if method == "umap-kmeans" else None,
    }
    labels = cached(
        "labels",
        label_parts,
        lambda: cluster_embeddings(features(), k, method, seed, umap_fit_size, show_progress),
        cache_dir,
        use_cache,
    )
    return labels, features


# ---------------------------------------------------------------------------------------------------------------------
# Clusters of a trainer's processed pool: from the tokens and labels it trains on
# ---------------------------------------------------------------------------------------------------------------------


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
    alone_losses: np.ndarray | Sequence[float] | None = None,
    embeddings: np.ndarray | None = None,
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
        alone_losses (`np.ndarray`, *optional*):
            With `how="ifd"`: each sample's loss of its trained tokens alone, already computed (the trainer splits
            that pass over its ranks); `model` then runs no forward.
        embeddings (`np.ndarray`, *optional*):
            With `how="embedding"`: each sample's L2-normalised mean hidden state over its first 512 tokens, already
            computed (the trainer takes them from its scoring pass); `model` then runs no forward.

    Returns:
        [`PoolClusters`].
    """
    _check_how(how)
    n = len(input_ids)
    k, seed = check_k(k, n), check_seed(seed)
    check_scoring_args(batch_size, None)
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
            if embeddings is not None:
                return np.asarray(embeddings, dtype=np.float32)
            sequences = [list(ids[:512]) for ids in input_ids]
            return embed_ids(model, sequences, padding_id(tokenizer), batch_size, True, show_progress)

    else:
        if conditional_losses is None:
            raise ValueError("`how='ifd'` needs `conditional_losses` (the trainer's initial scoring pass).")
        conditional = check_losses(conditional_losses, n)
        feature, method = ("ifd" if without_prompt == 0 else "initial_loss"), "kmeans"
        parts.update(what=f"pool_{feature}", conditional_losses=conditional)

        def features_fn() -> np.ndarray:
            if feature == "initial_loss":
                return conditional
            if alone_losses is not None:
                return conditional / np.maximum(check_losses(alone_losses, n), 1e-12)
            alone = answer_alone_losses(model, tokenizer, (None, answers), batch_size, None, show_progress)
            return conditional / np.maximum(alone, 1e-12)

        if feature == "initial_loss":
            logger.warning(
                "lead_clusters='ifd': %d of %d samples have no prompt (every token is trained, as in language-"
                "modeling rows), so their IFD is undefined; clustering the pool by its initial loss instead (k-means "
                "on each sample's loss under the model before training).",
                without_prompt,
                n,
            )
    labels_out, _ = _cached_labels(
        feature, parts, features_fn, k, method, seed, 50_000, cache_dir, use_cache, show_progress
    )
    logger.info("LEAD clusters: %d clusters of %d samples from %s.", k, n, feature)
    return PoolClusters(np.asarray(labels_out, dtype=np.int64), feature, without_prompt)


PROMPT_GROUP_SIZE = 32
"""Samples per comparison group of `prompt_groups` (on average): enough peers for a median, few enough that a group
holds one kind of instruction (on the generated pools, 16 to 125 per group excluded the same bad-source rows)."""


def prompt_groups(
    model: torch.nn.Module,
    tokenizer: Any,
    input_ids: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    group_size: int = PROMPT_GROUP_SIZE,
    seed: int | None = 0,
    batch_size: int = 16,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    show_progress: bool = True,
) -> np.ndarray:
    r"""
    Groups of samples with similar prompts: k-means with `k = ceil(N / group_size)` on the mean-pooled last hidden
    states of `model` over each sample's prompt (its tokens before the first trained one), L2-normalised. The
    comparison groups of `lead_filter_groups="prompts"`; cached like [`pool_clusters`].

    Args:
        model (`torch.nn.Module`):
            The training causal LM (optionally wrapped by PEFT).
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer (for the padding token).
        input_ids (`Sequence[Sequence[int]]`):
            Token ids of every sample.
        labels (`Sequence[Sequence[int]]`):
            Labels of every sample, `-100` where a token is not trained. Every sample needs a prompt (a first token
            that is not trained).
        group_size (`int`, *optional*, defaults to `PROMPT_GROUP_SIZE`):
            Samples per group on average.
        seed (`int`, *optional*, defaults to `0`):
            Seed of k-means (`None` means 0).
        batch_size (`int`, *optional*, defaults to `16`):
            Sequences per forward pass.
        cache_dir (`str` or `os.PathLike`, *optional*):
            Cache directory; default `$TRL_LEAD_CACHE` or `~/.cache/trl_lead`.
        use_cache (`bool`, *optional*, defaults to `True`):
            `False` neither reads nor writes the cache.
        show_progress (`bool`, *optional*, defaults to `True`):
            Show progress bars.

    Returns:
        `np.ndarray` of int64 group labels in `[0, ceil(N / group_size))`.
    """
    n = len(input_ids)
    if not (isinstance(group_size, int) and group_size >= 1):
        raise ValueError(f"`group_size={group_size!r}` must be an int >= 1 (samples per group).")
    seed = check_seed(seed)
    check_scoring_args(batch_size, None)
    prompts = []
    for i, ids in enumerate(input_ids):
        row = labels[i]
        end = next((t for t in range(1, len(row)) if row[t] != IGNORE_INDEX), len(row))
        if len(row) == 0 or row[0] != IGNORE_INDEX:  # as `trained_tokens` decides whether a sample has a prompt
            raise ValueError(
                f"Sample {i} has no prompt (its first token is trained, as in language-modeling rows), so it cannot "
                "be grouped by prompt; use `lead_filter_groups='clusters'` for such pools."
            )
        prompts.append(list(ids[: min(end, 512)]))
    k = check_k(min(math.ceil(n / group_size), n), n)
    digest = hashlib.sha256()
    for ids in prompts:
        digest.update(np.asarray(ids, dtype=np.int64).tobytes() + b"|")
    parts = {
        "v": _CACHE_VERSION,
        "what": "pool_prompt_embedding",
        "model": model_fingerprint(model),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "tokens": digest.hexdigest(),
        "batch_size": batch_size,
    }
    labels_out, _ = _cached_labels(
        "prompt_embedding",
        parts,
        lambda: embed_ids(model, prompts, padding_id(tokenizer), batch_size, True, show_progress),
        k,
        "kmeans",
        seed,
        50_000,
        cache_dir,
        use_cache,
        show_progress,
    )
    return np.asarray(labels_out, dtype=np.int64)


GROUPS_EXACT_MAX = 10_000
"""Most samples `embedding_groups` groups with one k-means of `N / group_size` centres; above, groups are found inside
coarse cells (one k-means over `N` points with `N / 32` centres costs `N^2 / 16` times the width in FLOPs: about 20
minutes per assignment pass at 1M x 896 on 2 cores)."""


def embedding_groups(
    embeddings: np.ndarray,
    group_size: int = PROMPT_GROUP_SIZE,
    seed: int | None = 0,
    exact_max: int = GROUPS_EXACT_MAX,
) -> np.ndarray:
    """Groups of about `group_size` samples with similar embeddings, as [`prompt_groups`] clusters its prompt
    embeddings (the trainer passes those of its scoring pass).

    Up to `exact_max` samples: k-means with `k = ceil(N / group_size)`. Above ([`trl_lead.kmeans.cell_groups`]): PCA
    to `PCA_DIMS` dimensions fitted on 50k random rows and applied to all in chunks; `ceil(k^0.6)` coarse cells by a
    k-means fitted on 50k rows, each sample in its nearest cell; each cell split by its own k-means into groups of
    about `group_size`; then 3 passes that move every sample to the nearest group centre among the groups of its 32
    nearest cells, which mend the kinds the cell borders cut. The small k-means and the passes grow as `N^1.4`, the
    nearest-cell search as `N^1.6` (1M x 896 in under 2 minutes on 2 cores: benchmarks/scale.py --groups); the labels
    are `0..groups-1`, numbered cell after cell."""
    if not (isinstance(group_size, int) and group_size >= 1):
        raise ValueError(f"`group_size={group_size!r}` must be an int >= 1 (samples per group).")
    seed = check_seed(seed)
    x = check_features(embeddings)
    n = x.shape[0]
    k = min(math.ceil(n / group_size), n)
    if n <= exact_max or k == 1:
        return cluster_embeddings(x, k, "kmeans", seed, show_progress=False)
    return cell_groups(x, group_size, seed)


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

    x = check_features(x)
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
            xy = pca_reduce(xs, 2, seed)
        else:
            import umap

            z = pca_reduce(xs, PCA_DIMS, seed) if xs.shape[1] > PCA_DIMS else xs
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
