"""k-means of feature rows, optionally after PCA or UMAP: the clustering that `trl_lead.clustering` runs on IFD scores
and embeddings, with the checks of its arguments (numpy, scikit-learn, umap-learn)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from tqdm.auto import tqdm

__all__ = ["CLUSTER_METHODS", "KMEANS_FULL_MAX_ELEMENTS", "cell_groups", "cluster_embeddings"]

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

_CHUNK = 65_536
_UMAP_TRANSFORM_CHUNK = 100_000


def check_features(x: Any) -> np.ndarray:
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


def check_k(k: Any, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"`k` must be an int, got {k!r}.")
    k = int(k)
    if k < 1:
        raise ValueError(f"`k` must be at least 1, got {k}; use the number of clusters (arms) you want, e.g. 7.")
    if k > n:
        raise ValueError(f"`k`={k} is larger than the number of samples ({n}); use k <= {n} (or add samples).")
    return k


def check_seed(seed: Any) -> int:
    if seed is None:
        return 0
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int (or None for 0), got {seed!r}.")
    return int(seed)


def check_method(method: Any) -> str:
    if method not in CLUSTER_METHODS:
        raise ValueError(f"`method`={method!r} is unknown; use one of {', '.join(map(repr, CLUSTER_METHODS))}.")
    return method


def run_kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
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


def pca_reduce(x: np.ndarray, dims: int, seed: int, fit_size: int = PCA_FIT_SIZE) -> np.ndarray:
    from sklearn.decomposition import PCA

    dims = min(dims, x.shape[1])
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(x.shape[0], fit_size, replace=False)) if x.shape[0] > fit_size else None
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
        x = pca_reduce(x, PCA_DIMS, seed)
    dims = min(UMAP_DIMS, x.shape[1])
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, fit_size, replace=False)) if n > fit_size else np.arange(n)
    n_fit = fit_rows.shape[0]
    if n_fit < 3 * dims + 3:  # too few points for UMAP's spectral layout: PCA alone
        return pca_reduce(x, dims, seed)
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
    method = check_method(method)
    seed = check_seed(seed)
    x = check_features(x)
    k = check_k(k, x.shape[0])
    if not isinstance(umap_fit_size, int) or umap_fit_size < 2:
        raise ValueError(f"`umap_fit_size` must be an int >= 2, got {umap_fit_size!r}.")
    if k == 1:
        return np.zeros(x.shape[0], dtype=np.int64)
    if method == "pca-kmeans":
        x = pca_reduce(x, PCA_DIMS, seed)
    elif method == "umap-kmeans":
        x = _umap(x, seed, umap_fit_size, show_progress)
    return run_kmeans(x, k, seed)


# ---------------------------------------------------------------------------------------------------------------------
# Many small groups of a large pool: k-means inside coarse cells, then a few passes over the neighbouring cells' groups
# ---------------------------------------------------------------------------------------------------------------------

CELLS_FIT_SIZE = 50_000
"""Rows the PCA and the coarse k-means of `cell_groups` are fitted on: 50k rows estimate an 896 x 896 covariance and
~500 coarse centres well enough, and fitting on 1M rows would cost as much as all the rest."""

CELL_PROBES = 32
"""Coarse cells whose groups a sample may move to in `cell_groups`' passes: its nearest 32. On N / 32 random kinds
of 896-wide embeddings (benchmarks/scale.py --groups) the samples of one kind fell in 7 cells on average at 1M samples
(2.5 at 100k): in 50 dims many cell centres are about as near as the nearest, so the noise of a sample decides its
cell. The adjusted Rand index at 1M after the passes: about 0.60 with 3 probes, 0.77 with 8, 0.85 with 16, 0.88 with
32 (each pass costs ~0.35 s per probe there); at 100k, 0.95 from 8 probes on."""

CELL_PASSES = 3
"""Passes of `cell_groups` that move each sample to the nearest group of its `CELL_PROBES` cells (a fourth changed
the adjusted Rand index by less than 0.005 at 100k and 1M)."""


def cell_groups(x: np.ndarray, group_size: int, seed: int) -> np.ndarray:
    """Groups of about `group_size` similar rows of a large `x`: k-means inside coarse cells, then restricted Lloyd
    passes that mend what the cells' borders cut.

    PCA to `PCA_DIMS` (fitted on `CELLS_FIT_SIZE` rows); `ceil(k^0.6)` coarse cells (k = N / group_size) by a k-means
    fitted on `CELLS_FIT_SIZE` rows, every row in its nearest cell; each cell split by its own k-means into groups of
    about `group_size` (cells of about `k^0.4` groups keep those k-means small). A kind of sample cut by cell borders
    leaves fragments in wrong groups, so `CELL_PASSES` times every row moves to the nearest group centre among the
    groups of its `CELL_PROBES` nearest cells (Lloyd steps over nearby groups only). Labels are `0..groups-1`."""
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    n = x.shape[0]
    if x.shape[1] > PCA_DIMS:
        x = pca_reduce(x, PCA_DIMS, seed, CELLS_FIT_SIZE)
    n_cells = min(math.ceil(math.ceil(n / group_size) ** 0.6), n)
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, CELLS_FIT_SIZE, replace=False)) if n > CELLS_FIT_SIZE else np.arange(n)
    centres = _fit_centres(x[fit_rows], n_cells, seed)
    near = nearest_centres(x, centres, min(CELL_PROBES, n_cells))
    # one thread for the many small k-means and products below: on a busy 2-core machine the OpenMP threads'
    # barriers made each k-means of ~500 rows take 25 times longer (0.23 s instead of 9 ms), each pass 10 times
    with threadpool_limits(limits=1):
        labels, offsets = _split_cells(x, near[:, 0], n_cells, group_size, seed)
        for _ in range(CELL_PASSES):
            labels = _move_to_nearest_group(x, labels, offsets, near)
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def _fit_centres(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Number of distinct clusters")  # as in run_kmeans
        # one initialisation and few steps: the cells only need to be compact, the passes mend what their borders cut
        model = KMeans(n_clusters=k, n_init=1, max_iter=20, random_state=seed).fit(x)
    return model.cluster_centers_.astype(np.float32)


def nearest_centres(x: np.ndarray, centres: np.ndarray, probes: int) -> np.ndarray:
    """`(N, probes)` int64: the indices of each row's `probes` nearest `centres`, nearest first (chunks of rows)."""
    out = np.empty((x.shape[0], probes), dtype=np.int64)
    norms = (centres.astype(np.float32) ** 2).sum(axis=1)
    for s in range(0, x.shape[0], _CHUNK):
        dist = norms - 2 * (x[s : s + _CHUNK] @ centres.T)  # squared distance less the row's own norm
        top = np.argpartition(dist, probes - 1, axis=1)[:, :probes] if probes < dist.shape[1] else np.argsort(dist, 1)
        out[s : s + _CHUNK] = np.take_along_axis(top, np.argsort(np.take_along_axis(dist, top, 1), 1), 1)
    return out


def _split_cells(
    x: np.ndarray, cells: np.ndarray, n_cells: int, group_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's own k-means into groups of about `group_size`; the labels, numbered cell after cell, and
    `offsets` (cell `c` holds groups `offsets[c]..offsets[c+1]-1`)."""
    labels = np.empty(x.shape[0], dtype=np.int64)
    offsets = np.zeros(n_cells + 1, dtype=np.int64)
    order = np.argsort(cells, kind="stable")
    bounds = np.searchsorted(cells[order], np.arange(n_cells + 1))
    for cell in range(n_cells):
        members = order[bounds[cell] : bounds[cell + 1]]
        groups = min(max(1, round(len(members) / group_size)), len(members))
        if groups > 1:
            labels[members] = offsets[cell] + run_kmeans(x[members], groups, seed)
        elif len(members):
            labels[members] = offsets[cell]
        offsets[cell + 1] = offsets[cell] + groups
    return labels, offsets


def _move_to_nearest_group(x: np.ndarray, labels: np.ndarray, offsets: np.ndarray, near: np.ndarray) -> np.ndarray:
    """One Lloyd step restricted to nearby groups: each row's nearest group centre among the groups of its `near`
    cells, one probe at a time (the rows whose j-th cell is `c` against the groups of `c`: small products)."""
    from scipy.sparse import csr_matrix

    k, n = int(offsets[-1]), x.shape[0]
    counts = np.bincount(labels, minlength=k)
    sums = csr_matrix((np.ones(n, dtype=np.float32), (labels, np.arange(n))), shape=(k, n)) @ x
    centres = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    norms = (centres**2).sum(axis=1)
    norms[counts == 0] = np.inf  # an emptied group has no centre and takes no row
    best, best_dist = labels.copy(), np.full(n, np.inf, dtype=np.float32)
    for probe in range(near.shape[1]):
        cells = near[:, probe]
        order = np.argsort(cells, kind="stable")
        bounds = np.searchsorted(cells[order], np.arange(len(offsets)))
        for cell in np.flatnonzero(np.diff(bounds)):
            rows, first, last = order[bounds[cell] : bounds[cell + 1]], offsets[cell], offsets[cell + 1]
            if last == first:
                continue
            dist = norms[first:last] - 2 * (x[rows] @ centres[first:last].T)
            pick = first + dist.argmin(axis=1)
            nearest = dist[np.arange(rows.size), pick - first]
            closer = nearest < best_dist[rows]
            best[rows[closer]], best_dist[rows[closer]] = pick[closer], nearest[closer]
    return best
