"""Trains LEAD on a slice of the embedded pool; launched by tests under `accelerate launch` (1 or 2 processes).

    python tests/scripts/run_lead.py OUTPUT_DIR PER_DEVICE_BATCH [MAX_STEPS] [RESUME_FROM_CHECKPOINT] [--ifd]

Checkpoints every 3 steps (rounds are 2 steps: checkpoint-3 falls in the middle of round 2). `--ifd`: clusters
computed from IFD scores (a scoring pass and an answer-alone pass) instead of the family column. Each rank writes the
rounds, the IDU and how many samples its no-grad forwards (the passes before the first step) saw.
"""

import json
import os
import sys

import torch.distributed as dist

from trl_lead import LEADConfig, LEADSFTTrainer
from trl_lead.embedded import build_tiny_model, build_tokenizer, make_instruction_pool


def main():
    ifd = "--ifd" in sys.argv
    argv = [a for a in sys.argv if a != "--ifd"]
    output_dir, batch = argv[1], int(argv[2])
    max_steps = int(argv[3]) if len(argv) > 3 else 8
    resume = argv[4] if len(argv) > 4 else None
    tokenizer = build_tokenizer()
    pool, _ = make_instruction_pool(num_train=160, num_eval_per_family=2, seed=0)
    model = build_tiny_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=0)
    args = LEADConfig(
        output_dir=output_dir,
        assistant_only_loss=True,
        per_device_train_batch_size=batch,
        learning_rate=1e-3,
        max_steps=max_steps,
        max_length=64,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="steps",
        save_steps=3,
        seed=0,
        lead_cluster_column=None if ifd else "family_id",
        lead_num_clusters=4,
        lead_round_size=16,
        lead_budget=0.5,
    )
    trainer = LEADSFTTrainer(model=model, args=args, train_dataset=pool, processing_class=tokenizer)
    scored = []  # rows of each forward outside training: the scoring passes before the first step

    def count(module, args, kwargs):
        if not module.training:
            scored.append(len(kwargs["input_ids"]))

    trainer.model.register_forward_pre_hook(count, with_kwargs=True)
    trainer.train(resume_from_checkpoint=resume)
    rank = trainer.accelerator.process_index
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as f:
        rounds = [{k: v for k, v in r.items() if k != "wall_time"} for r in trainer.lead_state.rounds]
        record = {"world": world, "rounds": rounds, "idu": trainer.lead_state.idu.tolist(), "scored": sum(scored)}
        json.dump({**record, "clusters": trainer.lead_state.cluster.tolist()}, f)
    # Destroy the process group before the interpreter exits: gloo's worker threads left to the interpreter's teardown
    # can abort a rank ("terminate called without an active exception") after its work is done
    if hasattr(trainer, "end"):  # transformers >= 5.18
        trainer.end()
    elif dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
