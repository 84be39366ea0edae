"""How close the sketched update cosines and norms are to the exact ones (docs/design.md: sketches).

Trains a Llama-style model of ~20M parameters for a few AdamW steps on two different token distributions (two
"clusters"), takes the real parameter-change vectors of three rounds, and compares the cosines and norms that
`UpdateTracker` estimates from a fixed random subset of coordinates with the exact ones, over 20 sketch seeds.

    python benchmarks/sketch_accuracy.py  ->  benchmarks/results/sketch_accuracy.md
"""

from __future__ import annotations

import os
import platform
import sys

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trl_lead.rounds import UpdateTracker, cosine


def round_update(model, optimizer, tokens, steps=3):
    before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    for _ in range(steps):
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return before


def main():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=8000,
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(config)
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    cluster_a = torch.randint(0, 4000, (8, 32))
    cluster_b = torch.randint(4000, 8000, (8, 32))
    snapshots = []
    for tokens in (cluster_a, cluster_b, cluster_a):
        snapshots.append(round_update(model, optimizer, tokens))
    snapshots.append(torch.cat([p.detach().reshape(-1).clone() for p in params]))
    exact = [snapshots[i + 1] - snapshots[i] for i in range(3)]
    pairs = {"A1 vs A2 (same cluster)": (0, 2), "A1 vs B (other cluster)": (0, 1), "B vs A2": (1, 2)}
    lines = [
        "# Sketched vs exact update cosines and norms",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__}, Python "
        f"{sys.version.split()[0]}. Model: Llama-style, {total / 1e6:.1f}M parameters, AdamW lr 1e-4, 3 steps per "
        "round, rounds A, B, A on disjoint token ranges. Sketch: a fixed uniform random subset of coordinates, "
        "20 sketch seeds.",
        "",
        "| sketch size | pair | exact cosine | sketch mean | sketch std | max abs error | norm rel. error (mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in (4096, 65536):
        for name, (i, j) in pairs.items():
            estimates, norm_errors = [], []
            for seed in range(20):
                tracker = UpdateTracker(params, seed, exact_limit=0, sketch_size=size)
                # Restrict the exact vectors to the tracker's coordinates, as its snapshots would
                offsets = np.cumsum([0] + [p.numel() for p in params])
                index = torch.cat([idx + int(offsets[k]) for k, idx in tracker.coords])
                u, v = exact[i][index], exact[j][index]
                estimates.append(cosine(u, v))
                norm_errors.append(abs(float(u.norm()) * (total / size) ** 0.5 / float(exact[i].norm()) - 1))
            truth = cosine(exact[i], exact[j])
            estimates = np.array(estimates)
            lines.append(
                f"| {size} | {name} | {truth:.4f} | {estimates.mean():.4f} | {estimates.std():.4f} | "
                f"{np.abs(estimates - truth).max():.4f} | {np.mean(norm_errors):.4f} |"
            )
    path = os.path.join(os.path.dirname(__file__), "results", "sketch_accuracy.md")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
