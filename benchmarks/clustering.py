"""Benchmark of trl_lead.clustering: k-means variants at a million samples, and IFD scoring throughput.

Run by hand (not part of the tests):

    python benchmarks/clustering.py                      # 1M x 384, all methods, IFD throughput
    python benchmarks/clustering.py --n 200000 --methods umap-kmeans

Each clustering method runs in its own subprocess, which generates the data (N points around K Gaussian centres in
D dims, float32, in chunks), then times `cluster_embeddings` and reports its wall time, the adjusted Rand index
against the planted labels, and the process's peak resident memory (`resource.getrusage(RUSAGE_SELF).ru_maxrss`,
which includes the 1.5 GB of input data) next to its RSS right after generating the data. The wall time of
`umap-kmeans` includes numba's just-in-time compilation of umap-learn (tens of seconds, paid once per process).

IFD throughput is measured on the project's embedded default (its character-level tokenizer, instruction pool and
tiny Llama), in samples per second, for `ifd_scores` (both passes) and `answer_losses` (the conditional half).

Results: a JSON file (`--json`) and a markdown table on stdout; `benchmarks/results/clustering.md` discusses them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_blobs(n: int, d: int, k: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)).astype(np.float32)
    y = rng.integers(0, k, n)
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        x[s:e] = centers[y[s:e]]
        x[s:e] += rng.standard_normal((e - s, d), dtype=np.float32)
    return x, y


def rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def worker(args: argparse.Namespace) -> None:
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    t0 = time.perf_counter()
    if args.worker == "umap-kmeans":
        import umap  # noqa: F401 - time the import apart from the clustering

    import_s = time.perf_counter() - t0
    from trl_lead.kmeans import cluster_embeddings

    t0 = time.perf_counter()
    x, y = make_blobs(args.n, args.d, args.k, args.seed)
    gen_s = time.perf_counter() - t0
    data_rss = rss_gb()
    t0 = time.perf_counter()
    labels = cluster_embeddings(
        x, args.k, method=args.worker, seed=args.seed, umap_fit_size=args.umap_fit_size, show_progress=True
    )
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    result = {
        "method": args.worker,
        "n": args.n,
        "d": args.d,
        "k": args.k,
        "wall_s": round(wall, 1),
        "ari": round(float(adjusted_rand_score(y, labels)), 4),
        "peak_rss_gb": round(peak, 2),
        "rss_after_data_gb": round(data_rss, 2),
        "data_gen_s": round(gen_s, 1),
        "import_s": round(import_s, 1),
        "clusters_found": int(np.unique(labels).size),
        "loadavg_after": os.getloadavg(),
    }
    print("RESULT " + json.dumps(result), flush=True)


def ifd_throughput(num_samples: int, batch_sizes: list[int]) -> list[dict]:
    import torch

    from trl_lead.embedded import build_tiny_model, build_tokenizer
    from trl_lead.pool import make_instruction_pool
    from trl_lead.scoring import answer_losses, ifd_scores

    tokenizer = build_tokenizer()
    pool, _ = make_instruction_pool(num_train=num_samples, num_eval_per_family=1, seed=0)
    model = build_tiny_model(tokenizer)
    params = sum(p.numel() for p in model.parameters())
    lengths = []
    for row in pool.select(range(min(200, len(pool)))):
        text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
        lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    answer_losses(model, tokenizer, pool.select(range(32)), batch_size=16, show_progress=False)  # warm-up
    out = []
    for bs in batch_sizes:
        for name, fn in (("ifd_scores", ifd_scores), ("answer_losses", answer_losses)):
            t0 = time.perf_counter()
            fn(model, tokenizer, pool, batch_size=bs, show_progress=False)
            wall = time.perf_counter() - t0
            out.append(
                {
                    "function": name,
                    "batch_size": bs,
                    "samples": len(pool),
                    "wall_s": round(wall, 2),
                    "samples_per_s": round(len(pool) / wall, 1),
                    "model_params": params,
                    "mean_tokens_per_sample": round(sum(lengths) / len(lengths), 1),
                    "torch_threads": torch.get_num_threads(),
                }
            )
            print(json.dumps(out[-1]), flush=True)
    return out


def machine() -> dict:
    import numpy
    import sklearn
    import torch
    import transformers
    import umap

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        with open("/proc/meminfo") as f:
            mem_gb = int(next(line for line in f if line.startswith("MemTotal")).split()[1]) / 1024**2
    except (OSError, StopIteration):
        mem_gb = float("nan")
    try:
        import numba

        numba_version = numba.__version__
    except ImportError:
        numba_version = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "umap-learn": umap.__version__,
        "numba": numba_version,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "loadavg_start": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--umap-fit-size", type=int, default=50_000)
    parser.add_argument("--methods", nargs="*", default=["kmeans", "pca-kmeans", "umap-kmeans"])
    parser.add_argument("--ifd-samples", type=int, default=2000, help="0 skips the IFD throughput")
    parser.add_argument("--ifd-batch-sizes", type=int, nargs="*", default=[16, 64])
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per method subprocess")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "clustering.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    report = {"machine": machine(), "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "json")}}
    json_path = args.json.resolve()
    report["settings"]["json"] = str(json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path)
    print(json.dumps(report["machine"]), flush=True)
    report["clustering"] = []
    for method in args.methods:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            method,
            "--n",
            str(args.n),
            "--d",
            str(args.d),
            "--k",
            str(args.k),
        ]
        cmd += ["--seed", str(args.seed), "--umap-fit-size", str(args.umap_fit_size)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if lines:
                result = json.loads(lines[-1][len("RESULT ") :])
            else:
                result = {"method": method, "n": args.n, "error": proc.stderr[-2000:]}
        except subprocess.TimeoutExpired:
            result = {"method": method, "n": args.n, "error": f"timed out after {args.timeout:.0f} s"}
        result["process_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(result), flush=True)
        report["clustering"].append(result)
    if args.ifd_samples:
        report["ifd"] = ifd_throughput(args.ifd_samples, args.ifd_batch_sizes)
    report["machine"]["loadavg_end"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, args.json)

    print("\n| method | N x D | wall (s) | peak RSS (GB) | RSS after data (GB) | ARI |")
    print("|---|---|---|---|---|---|")
    for r in report["clustering"]:
        if "error" in r:
            print(f"| {r['method']} | {r['n']} x {args.d} | error: {r['error'][-200:]!r} | | | |")
        else:
            print(
                f"| {r['method']} | {r['n']} x {r['d']} | {r['wall_s']} | {r['peak_rss_gb']} | "
                f"{r['rss_after_data_gb']} | {r['ari']} |"
            )
    for r in report.get("ifd", []):
        print(f"IFD {r['function']} batch {r['batch_size']}: {r['samples_per_s']} samples/s")


if __name__ == "__main__":
    main()
