"""`RoundRun`: the LEAD rounds of one training run, which `LEADSFTTrainer` drives from its hooks.

It owns the selection state, the selector, the policy, the losses recorded during the round in flight, the update
vectors of the gradient correction and the planned rounds; it begins and finishes rounds and saves and restores all
of that. What needs the model, the ranks or the file system (scoring, gathering, dot products summed over ranks, the
checkpoint files, the round log) stays with the trainer, which hands the results in.

A round's life, one Trainer epoch:

1. `epoch_to_train(step)`: the epoch the sampler's new iterator trains (a resume inside a round trains it again).
2. `begin(epoch, plan, step, steps)`: the round before folded in by the caller, the next one planned; `rows` then
   replays it.
3. During its steps the trainer records each trained sample's loss into `losses`.
4. `finish(ids, losses, eta, cosines_of, step)`: its losses folded in (`RoundSelector.finish_round`), its update
   kept for the next visits of its clusters; the round's record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .rounds import LossRecorder, RoundInFlight, UpdateTracker
from .selection import LEADState, PlannedRound, RoundSelector
from .settings import SelectionSettings

logger = logging.getLogger(__name__)


class RoundRun:
    """The rounds of one run over a pool (see the module docstring).

    Args:
        settings (`SelectionSettings`): the selection settings, sizes as counts over the pool.
        policy: the bandit policy choosing the clusters.
        seed (`int`): seed of the selector, the policy and the update sketch.
    """

    def __init__(self, settings: SelectionSettings, policy: Any, seed: int) -> None:
        self.settings = settings
        self.policy = policy
        self.seed = seed
        self.state: LEADState | None = None
        self.selector: RoundSelector | None = None  # exists with `state`
        self.losses = LossRecorder()  # (id, IU) of the round in flight's trained samples
        self.tracker: UpdateTracker | None = None  # made when rounds start: the model is prepared by then
        self.updates: dict[int, torch.Tensor] = {}  # per cluster: the update of the round that last trained it
        self.plans: dict[int, PlannedRound] = {}  # planned rounds by Trainer epoch, replayed when asked again
        self.in_flight: RoundInFlight | None = None  # the round whose losses are not yet folded in
        self.started = False  # rounds start with the first one or a resume

    def make_state(self, clusters: np.ndarray) -> None:
        """A fresh `LEADState` over the pool's cluster labels, and its selector."""
        self.state = LEADState(clusters)
        self.selector = RoundSelector(self.state, self.policy, self.settings, self.seed)

    def start(
        self,
        clusters: np.ndarray,
        parameters: list[torch.nn.Parameter],
        initial_scores: np.ndarray | None = None,
        filter_groups: np.ndarray | None = None,
    ) -> None:
        """Ready for the first round: the state (unless restored), its initial scores and filter groups, the policy
        reset over the clusters, the update tracker over the trainable `parameters`."""
        if self.state is None:
            self.make_state(clusters)
        if initial_scores is not None:
            self.state.set_initial_scores(initial_scores)
        if filter_groups is not None:
            self.state.set_filter_groups(filter_groups)
        self.policy.reset(self.state.num_clusters, seed=self.seed)
        self.tracker = UpdateTracker(parameters, self.seed)
        self.started = True
        if self.selector.filter_held_back():
            logger.warning(
                "LEAD: the small-loss filter excludes nothing on this pool. The initial scores of comparable samples "
                f"lie close (median interquartile range {self.state.filter_spread():.2f} nats per token, under "
                f"`lead_filter_min_spread={self.settings.filter_min_spread}`), so a cut by loss would keep easy "
                "answers rather than right ones. Set `lead_filter_min_spread=0` to cut anyway."
            )

    # ----- one round ---------------------------------------------------------------------------------------------
    def epoch_to_train(self, global_step: int) -> int:
        """The Trainer epoch a new iterator of the sampler trains: the round in flight when the step is inside it (a
        resume, or its iterator made again), else the next one. Read from the rounds, not from `set_epoch` or the
        step count (see `LEADSFTTrainer`'s sampler)."""
        if self.in_flight is not None:
            return self.in_flight.epoch + (global_step >= self.in_flight.end_step)
        return len(self.state.rounds) if self.state is not None else 0

    def begin(
        self, epoch: int, plan: Callable[[], PlannedRound | None], global_step: int, steps: Callable[[int], int]
    ) -> bool:
        """Plan the round of Trainer epoch `epoch` with `plan` (after the caller folded in the round before); False
        when none is left to train. `steps(n)`: the optimizer steps of a round of `n` samples."""
        planned = plan()
        if planned is None or len(planned.sample_ids) == 0:
            return False
        self.plans[epoch] = planned
        self.in_flight = RoundInFlight(
            epoch,
            planned,
            end_step=global_step + steps(len(planned.sample_ids)),
            start_params=self.tracker.snapshot(),
            start_time=time.perf_counter(),
        )
        return True

    def finish(
        self,
        ids: np.ndarray,
        losses: np.ndarray,
        eta: float,
        cosines_of: Callable[[torch.Tensor, dict[int, torch.Tensor]], dict[int, float]],
        step: int,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Fold the round in flight's gathered losses in (`ids`, each once, and their IU) with the learning-rate
        factor `eta`; `cosines_of(update, others)` gives the cosine of the round's update with each cluster's last.
        Returns the round's record, with the global `step` it ended at, its `wall_time` and the fields of `extra`."""
        in_flight = self.in_flight
        update = self.tracker.snapshot() - in_flight.start_params
        present = np.unique(self.state.cluster[ids]).tolist()
        cosines = cosines_of(update, {k: self.updates[k] for k in present if k in self.updates})
        for k in present:
            self.updates[k] = update
        extra = {"step": step, "wall_time": time.perf_counter() - in_flight.start_time, **(extra or {})}
        record = self.selector.finish_round(
            in_flight.planned, ids, losses, eta=eta, cos_with_last_visit=cosines, extra=extra
        )
        self.in_flight = None
        return record

    # ----- checkpoints -----------------------------------------------------------------------------------------------
    def checkpoint(self, pending_pairs: list[tuple[int, float]]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """What an exact resume needs, as arrays (`lead_state.npz`) and JSON (`lead_policy.json`): the per-sample
        state, the policy's and the selector's random state, the round in flight's plan with the losses it has
        recorded on every rank (`pending_pairs`), and the update vectors of the gradient correction."""
        arrays = dict(self.state.state_dict())
        for k, update in self.updates.items():
            arrays[f"update_{k}"] = update.numpy()
        plan, in_flight = None, self.in_flight
        if in_flight is not None:
            arrays["round_start"] = in_flight.start_params.numpy()
            plan = {
                "epoch": in_flight.epoch,
                "end_step": in_flight.end_step,
                "planned": {
                    **vars(in_flight.planned),
                    "sample_ids": in_flight.planned.sample_ids.tolist(),
                    "filled": in_flight.planned.filled.tolist(),
                },
                "losses": pending_pairs,
            }
        meta = {
            "policy": self.policy.state_dict() if callable(getattr(self.policy, "state_dict", None)) else None,
            "selector": self.selector.state_dict(),
            "rounds": self.state.rounds,
            "pending": plan,
        }
        return arrays, meta

    def restore(
        self, arrays: dict[str, np.ndarray], meta: dict[str, Any], parameters: list[torch.nn.Parameter]
    ) -> None:
        """Continue from what `checkpoint` gave (read back from a checkpoint of the same pool)."""
        if self.state is None:
            self.make_state(arrays["cluster"])
        self.state.load_state_dict(arrays, rounds=meta["rounds"])
        self.selector.load_state_dict(meta["selector"])
        if meta["policy"] is not None:
            self.policy.reset(self.state.num_clusters, seed=self.seed)
            self.policy.load_state_dict(meta["policy"])
        self.tracker = UpdateTracker(parameters, self.seed)
        self.updates = {
            int(key.removeprefix("update_")): torch.from_numpy(value)
            for key, value in arrays.items()
            if key.startswith("update_")
        }
        self.plans, self.in_flight = {}, None
        self.losses.restored = []
        pending = meta["pending"]
        if pending is not None:
            planned = dict(pending["planned"])
            planned["sample_ids"] = np.asarray(planned["sample_ids"], dtype=np.int64)
            planned["filled"] = np.asarray(planned["filled"], dtype=bool)
            planned = self.plans[pending["epoch"]] = PlannedRound(**planned)
            self.in_flight = RoundInFlight(
                pending["epoch"],
                planned,
                end_step=pending["end_step"],
                start_params=torch.from_numpy(arrays["round_start"]),
                start_time=time.perf_counter(),
            )
            self.losses.restored = [tuple(pair) for pair in pending["losses"]]
        self.started = True


def round_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """A round's metrics in the Trainer's log (`lead/...`), from its record."""
    cluster = record["cluster"]
    return {
        "lead/round": record["round"],
        "lead/cluster": cluster if isinstance(cluster, int) else -1,
        "lead/reward": record["reward"],
        "lead/selected": record["selected"],
        "lead/new": record["new"],
        "lead/mean_idu": record["mean_idu"],
        # eligible samples of the round's clusters that lead_sample_filter excluded (0 with the filter off)
        "lead/filtered": record["filtered"],
    }
