"""Trains LEAD on the embedded pool and SIGKILLs itself at one chosen moment of a checkpoint save.

    LEAD_TEST_KILL_AT=POINT LEAD_TEST_KILL_STEP=STEP python tests/scripts/kill_during_save.py OUTPUT_DIR SETTINGS_JSON

POINT is where the save of checkpoint-STEP dies:
- `saving-model`: right after transformers wrote the model, before the optimizer, RNG and trainer state;
- `writing-lead-state`: half-way through `lead_state.npz` (half a zip written, then the kill);
- `after-rotation`: right after transformers deleted the checkpoints beyond `save_total_limit`.
"""

import json
import os
import signal
import sys

import numpy as np
import transformers.trainer as hf_trainer

from trl_lead import LEADConfig, LEADSFTTrainer
from trl_lead.embedded import build_tiny_model, build_tokenizer, make_instruction_pool

KILL_AT = os.environ["LEAD_TEST_KILL_AT"]
KILL_STEP = int(os.environ["LEAD_TEST_KILL_STEP"])


def main():
    output_dir, settings = sys.argv[1], json.loads(sys.argv[2])
    tokenizer = build_tokenizer()
    pool, _ = make_instruction_pool(num_train=160, num_eval_per_family=2, seed=0)
    model = build_tiny_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=0)
    args = LEADConfig(output_dir=output_dir, **settings)
    trainer = LEADSFTTrainer(model=model, args=args, train_dataset=pool, processing_class=tokenizer)

    def dying() -> bool:
        return trainer.state.global_step == KILL_STEP

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if KILL_AT == "saving-model":
        save_model = trainer.save_model

        def save_model_then_die(output_dir=None, _internal_call=False):
            save_model(output_dir, _internal_call)
            if _internal_call and dying():
                die()

        trainer.save_model = save_model_then_die
    elif KILL_AT == "writing-lead-state":
        savez = np.savez

        def half_savez_then_die(file, **arrays):
            if dying():
                file.write(b"PK\x03\x04 half a zip")
                file.flush()
                die()
            savez(file, **arrays)

        np.savez = half_savez_then_die
    elif KILL_AT == "after-rotation":
        rotate = hf_trainer.rotate_checkpoints

        def rotate_then_die(*args, **kwargs):
            rotate(*args, **kwargs)
            if dying():
                die()

        hf_trainer.rotate_checkpoints = rotate_then_die  # looked up in the module at each save
    else:
        raise ValueError(f"LEAD_TEST_KILL_AT={KILL_AT!r}: use saving-model, writing-lead-state or after-rotation")
    trainer.train()


if __name__ == "__main__":
    main()
