"""Trains LEAD on a slice of the embedded pool; launched by tests under `accelerate launch` (1 or 2 processes).

    python tests/scripts/run_lead.py OUTPUT_DIR PER_DEVICE_BATCH [MAX_STEPS] [RESUME_FROM_CHECKPOINT]

Checkpoints every 3 steps (rounds are 2 steps: checkpoint-3 falls in the middle of round 2).
"""

import json
import os
import sys

import torch.distributed as dist

from trl_lead import LEADConfig, LEADSFTTrainer
from trl_lead.embedded import build_tiny_model, build_tokenizer, make_instruction_pool


def main():
    output_dir, batch = sys.argv[1], int(sys.argv[2])
    max_steps = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    resume = sys.argv[4] if len(sys.argv) > 4 else None
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
        lead_cluster_column="family_id",
        lead_round_size=16,
        lead_budget=0.5,
    )
    trainer = LEADSFTTrainer(model=model, args=args, train_dataset=pool, processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=resume)
    rank = trainer.accelerator.process_index
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as f:
        rounds = [{k: v for k, v in r.items() if k != "wall_time"} for r in trainer.lead_state.rounds]
        json.dump({"world": world, "rounds": rounds, "idu": trainer.lead_state.idu.tolist()}, f)


if __name__ == "__main__":
    main()
