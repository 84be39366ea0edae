"""The round/step arithmetic of a LEAD run, in one place: optimizer steps per round, the steps a run asks for and
the steps its budget fills, and what to say when those fall short."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import LEADConfig
    from .settings import SelectionSettings


def budget_shortfall(args: LEADConfig, settings: SelectionSettings) -> str | None:
    """The warning for a run whose budget and reuse cap cannot fill the steps or epochs asked for, or None."""
    asked, taken = run_steps(args, settings.round_size, settings.budget, settings.warmup_rounds)
    if taken >= asked:
        return None
    if args.max_steps > 0:
        per_round = steps_per_round(args, settings.round_size)
        reuse = math.ceil(math.ceil(asked / per_round) * settings.round_size / settings.budget)
        asked_by, fixes = (
            f"`max_steps={asked}`",
            f"raise `lead_max_reuse` to {reuse} (or `lead_budget`) to train {asked} steps, or set "
            f"`max_steps={taken}` to plan this length",
        )
    elif args.num_train_epochs > args.lead_max_reuse:  # else only the last pass's rounding into rounds falls short
        asked_by, fixes = (
            f"`num_train_epochs={args.num_train_epochs}` (passes over the budget)",
            (
                f"raise `lead_max_reuse` to {math.ceil(args.num_train_epochs)} to train them, or lower "
                f"`num_train_epochs` to {args.lead_max_reuse}"
            ),
        )
    else:
        return None
    return (
        f"LEAD: the budget of {settings.budget} samples, each trained at most `lead_max_reuse={args.lead_max_reuse}` "
        f"times, fills {taken} optimizer steps (rounds of {settings.round_size} samples), fewer than the {asked} that "
        f"{asked_by} asks for: training stops at step {taken}, and the learning-rate schedule is planned for {taken} "
        f"steps. To change it, {fixes}."
    )


def run_steps(args: LEADConfig, round_size: int, budget: int, warmup_rounds: int) -> tuple[int, int]:
    """Optimizer steps of a run: those asked, and those it takes.

    Asked: `max_steps`, or without it `num_train_epochs` passes over the budget plus the warm-up, in rounds of
    `round_size` (one round per Trainer epoch). Taken: at most the steps that the budget's `budget * lead_max_reuse`
    sample visits fill in full rounds and one last round of the rest. The rounds of a run use every visit, so it
    reaches these steps unless the reuse cap leaves its last rounds so short that they need fewer steps in all (only
    possible when `round_size` is not a multiple of the samples per step)."""
    per_round = steps_per_round(args, round_size)
    if args.max_steps > 0:
        asked = args.max_steps
    else:
        asked = (math.ceil(args.num_train_epochs * budget / round_size) + warmup_rounds) * per_round
    full_rounds, rest = divmod(budget * args.lead_max_reuse, round_size)
    return asked, min(asked, full_rounds * per_round + steps_per_round(args, rest))


def steps_per_round(args: LEADConfig, round_size: int) -> int:
    """Optimizer steps of one round: its batches over all ranks, grouped by gradient accumulation."""
    batches = math.ceil(round_size / (args.per_device_train_batch_size * max(args.world_size, 1)))
    return math.ceil(batches / max(args.gradient_accumulation_steps, 1))
