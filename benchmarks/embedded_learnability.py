"""How learnable is the embedded default? Per-family exact match after the warm-up and after more random SFT.

Builds (or loads from the cache) the warmed-up base model of ``trl_lead.embedded``, scores it on the held-out set,
then continues plain SFT on uniformly random pool samples (no selection) for ``--more-steps`` steps and scores it
again. Prints one JSON object; ``--out`` also writes it to a file. CPU only, no network.

    python benchmarks/embedded_learnability.py --more-steps 300 --out benchmarks/results/embedded_learnability.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from trl_lead.embedded import (
    DEFAULT_LEARNING_RATE,
    DEFAULT_WARMUP_STEPS,
    EMBEDDED_SFT_KWARGS,
    exact_match,
    torch_threads,
    warmed_up_base,
)
from trl_lead.pool import make_instruction_pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache-dir", default=None, help="warm-up cache (default $TRL_LEAD_CACHE or ~/.cache/trl_lead)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup-steps", type=int, default=DEFAULT_WARMUP_STEPS)
    parser.add_argument("--warmup-lr", type=float, default=DEFAULT_LEARNING_RATE)
    parser.add_argument("--model-kwargs", type=json.loads, default=None, help="e.g. '{\"hidden_size\": 128}'")
    parser.add_argument("--more-steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=DEFAULT_LEARNING_RATE)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    start = time.perf_counter()
    path = warmed_up_base(
        args.cache_dir,
        steps=args.warmup_steps,
        seed=args.seed,
        learning_rate=args.warmup_lr,
        model_kwargs=args.model_kwargs,
    )
    warmup_s = time.perf_counter() - start
    warmup_info = json.loads((Path(path) / "warmup.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    train, evaluation = make_instruction_pool(seed=args.seed)

    start = time.perf_counter()
    after_warmup = exact_match(model, tokenizer, evaluation)
    eval_s = time.perf_counter() - start

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as output_dir, torch_threads(1):
        config = SFTConfig(
            output_dir=output_dir,
            **{
                **EMBEDDED_SFT_KWARGS,
                "max_steps": args.more_steps,
                "learning_rate": args.lr,
                "disable_tqdm": True,
                "logging_steps": max(1, args.more_steps // 10),
                "seed": args.seed + 1,
            },
        )
        trainer = SFTTrainer(
            model=model, args=config, train_dataset=train.select_columns(["messages"]), processing_class=tokenizer
        )
        trainer.train()
    more_s = time.perf_counter() - start
    after_more = exact_match(model, tokenizer, evaluation)

    result = {
        "seed": args.seed,
        "model_path": path,
        "num_parameters": model.num_parameters(),
        "warmup_settings": warmup_info["settings"],
        "warmup_build_wall_s": warmup_info["wall_time_s"],
        "warmup_call_wall_s": round(warmup_s, 2),
        "warmup_logged_losses": warmup_info["logged_losses"],
        "exact_match_eval_wall_s": round(eval_s, 2),
        "more_steps": args.more_steps,
        "more_steps_lr": args.lr,
        "more_steps_wall_s": round(more_s, 2),
        "exact_match_after_warmup": {k: round(v, 1) for k, v in after_warmup.items()},
        f"exact_match_after_{args.more_steps}_more_steps": {k: round(v, 1) for k, v in after_more.items()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
