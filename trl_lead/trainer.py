"""`LEADSFTTrainer`: TRL's `SFTTrainer` that trains in LEAD rounds chosen from losses it computes anyway."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
import zipfile
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object
from datasets import Dataset
from torch.utils.data import Sampler
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTTrainer

from .config import LEADConfig
from .policies import make_policy
from .selection import LEADState, PlannedRound, RoundSelector
from .settings import SelectionSettings, check_policy, resolve_sizes

SAMPLE_ID = "lead_id"  # dataset column carrying each sample's row in the user's dataset
STATE_FILE = "lead_state.npz"
POLICY_FILE = "lead_policy.json"
ROUNDS_FILE = "lead_rounds.jsonl"
# Trainable parameters above which update vectors are sketched: exact copies cost (clusters + 1) x 4 bytes per
# parameter in host memory, a sketch ~2 MB in all, and its cosines are within 0.005 (benchmarks/sketch_accuracy.py)
EXACT_UPDATE_LIMIT = 1_000_000
SKETCH_SIZE = 65_536


def per_sample_loss(log_probs: torch.Tensor, label_mask: torch.Tensor, position_ids: torch.Tensor | None):
    """Sum of token losses and token count per sample, from the fused LM head's per-token outputs.

    `log_probs`/`label_mask` have shape (B, T-1): position t scores token t+1. Padded batches have one sample per
    row. Padding-free batches (B = 1, `position_ids` restarting at 0 at each sample) have one sample per segment.
    """
    token_loss = -log_probs.detach().float() * label_mask
    if position_ids is None or log_probs.size(0) != 1 or not (position_ids[0, 1:] == 0).any():
        return token_loss.sum(1), label_mask.sum(1)
    segment = torch.cumsum(position_ids[0] == 0, 0) - 1  # segment of each input token
    segment = segment[1:]  # the segment of the token each position scores
    num_segments = int(segment.max()) + 1
    sums = torch.zeros(num_segments, device=log_probs.device).index_add_(0, segment, token_loss[0])
    counts = torch.zeros(num_segments, device=log_probs.device).index_add_(0, segment, label_mask[0].float())
    return sums, counts


class _CollatorWithIds:
    """Wraps the trainer's collator so each batch carries its samples' ids (TRL's collator drops unknown keys)."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [example[SAMPLE_ID] for example in examples]
        batch = self.collator([{k: v for k, v in example.items() if k != SAMPLE_ID} for example in examples])
        batch[SAMPLE_ID] = torch.tensor(ids, dtype=torch.long)
        return batch


class _RoundSampler(Sampler):
    """One Trainer epoch = one LEAD round. The round is chosen when the epoch's iterator is created, which the
    Trainer does after the previous epoch's last optimizer step, so the choice sees every loss of the last round.

    The epoch is read from the Trainer's step count (every epoch has the same number of steps), not from
    `set_epoch`: when resuming mid-epoch under several processes, accelerate's skipping wrapper does not forward
    `set_epoch` to this sampler."""

    def __init__(self, trainer: LEADSFTTrainer, round_size: int):
        self.trainer = trainer
        self.round_size = round_size

    def set_epoch(self, epoch: int) -> None:
        pass  # see the class docstring

    def __len__(self) -> int:
        return self.round_size

    def __iter__(self):
        trainer = self.trainer
        epoch = trainer.state.global_step // _steps_per_round(trainer.args, self.round_size)
        return iter(trainer._round_rows(epoch).tolist())


class _FinishRoundAtLastStep(TrainerCallback):
    """Folds a round's losses in right after its last optimizer step, before the Trainer logs or saves."""

    def __init__(self, trainer: LEADSFTTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        if trainer._lead_pending is not None and state.global_step >= trainer._lead_round_end_step:
            trainer._finish_round(trainer._lead_pending, log_now=False)
            control.should_log = True  # the Trainer's own log of this step carries the round's metrics


class _UpdateTracker:
    """Parameter-change vectors of the trainable parameters over a round, exact or on a fixed random sketch.

    Exact copies cost one float32 vector of the trainable parameters per stored update (one per cluster, plus the
    round's start). Above `EXACT_UPDATE_LIMIT` parameters, a fixed random subset of `SKETCH_SIZE` coordinates (uniform
    over all trainable coordinates, drawn once) stands in for the vector: cosines between such restrictions are
    consistent estimates, with error of order 1/sqrt(SKETCH_SIZE) for dense updates.
    """

    def __init__(
        self,
        params: list[torch.nn.Parameter],
        seed: int,
        exact_limit: int = EXACT_UPDATE_LIMIT,
        sketch_size: int = SKETCH_SIZE,
    ):
        self.params = params
        sizes = [_local(p).numel() for p in params]  # local shards under FSDP/ZeRO-3
        self.total = sum(sizes)
        self.exact = self.total <= exact_limit
        if not self.exact:
            generator = torch.Generator().manual_seed(seed)
            flat = torch.randperm(self.total, generator=generator)[:sketch_size].sort().values
            offsets = torch.tensor([0, *np.cumsum(sizes)])
            owner = torch.searchsorted(offsets, flat, right=True) - 1
            self.coords = [(i, flat[owner == i] - offsets[i]) for i in range(len(params)) if (owner == i).any()]

    @torch.no_grad()
    def snapshot(self) -> torch.Tensor:
        params = [_local(p) for p in self.params]
        if self.exact:
            return torch.cat([p.float().reshape(-1).cpu() for p in params])
        return torch.cat([params[i].reshape(-1)[idx.to(params[i].device)].float().cpu() for i, idx in self.coords])


def _local(param: torch.Tensor) -> torch.Tensor:
    """This rank's values of a parameter: the local shard of an FSDP2 DTensor, else the tensor itself."""
    param = param.detach()
    return param.to_local() if hasattr(param, "to_local") else param


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    norm = float(a.norm() * b.norm())
    return float(a @ b) / norm if norm > 0 else 1.0


class LEADSFTTrainer(SFTTrainer):
    r"""
    `SFTTrainer` that selects its training data with LEAD (Lin et al., arXiv 2505.07437).

    Training runs in rounds, one Trainer epoch each. Each round a bandit policy picks a cluster of the pool, the
    samples of highest Instance-level Dynamic Uncertainty (IDU) in it are trained on once, and `compute_loss` records
    each trained sample's loss (IU) from the forward pass it does anyway. At the round's end the IDU of those
    samples is updated (gradient correction, smoothing), and the round's reward goes to the policy.

    Args:
        model, args, data_collator, train_dataset, eval_dataset, processing_class, ...:
            As for [`~trl.SFTTrainer`]. `args` is a [`LEADConfig`]; `train_dataset` a `datasets.Dataset` (the pool).
        policy (`trl_lead.policies.Policy`, *optional*):
            Bandit policy choosing the clusters; by default `make_policy(args.lead_policy)`.
        clusters (`np.ndarray`, *optional*):
            Cluster label of every row of `train_dataset`; overrides `args.lead_cluster_column` and computed clusters.

    Attributes:
        lead_state (`LEADState`): per-sample IU, IDU, use counts, clusters, and the list of rounds.
    """

    def __init__(self, model=None, args: LEADConfig | None = None, *pargs, policy=None, clusters=None, **kwargs):
        if args is None:
            args = LEADConfig(output_dir="trainer_output")
        self._lead = isinstance(args, LEADConfig) and args.lead_enabled
        if not self._lead:
            super().__init__(model, args, *pargs, **kwargs)
            return
        train_dataset = kwargs.get("train_dataset", pargs[1] if len(pargs) > 1 else None)
        if not isinstance(train_dataset, Dataset):
            raise ValueError(
                "LEAD selects from a pool of known size: `train_dataset` must be a `datasets.Dataset` (not an "
                f"iterable or streaming dataset), got {type(train_dataset).__name__}. Pass a map-style Dataset or set "
                "`lead_enabled=False`."
            )
        n = len(train_dataset)
        self._lead_clusters = self._resolve_clusters(train_dataset, args, clusters)
        self._lead_pool = train_dataset  # the user's rows, for computed clusters
        self._lead_settings = self._resolve_settings(args, n)
        self._lead_policy = self._resolve_policy(args, policy)
        if "train_dataset" in kwargs:
            kwargs["train_dataset"] = train_dataset.add_column(SAMPLE_ID, np.arange(n))
        else:
            pargs = (pargs[0], train_dataset.add_column(SAMPLE_ID, np.arange(n)), *pargs[2:])

        super().__init__(model, args, *pargs, **kwargs)

        parallelism = self.accelerator.parallelism_config
        if parallelism is not None and (parallelism.cp_enabled or getattr(parallelism, "sp_enabled", False)):
            raise ValueError(
                "LEAD needs each sample's whole loss on one rank; context/sequence parallelism splits it. Disable it "
                "or set `lead_enabled=False`."
            )
        self._check_trained_tokens(n)
        self.data_collator = _CollatorWithIds(self.data_collator)
        rows = np.asarray(self.train_dataset[SAMPLE_ID])
        self._lead_row_of_id = np.empty(n, dtype=np.int64)
        self._lead_row_of_id[rows] = np.arange(len(rows))
        self.lead_state: LEADState | None = None
        if self._lead_clusters is not None:
            self._make_state(self._lead_clusters)
        self._lead_rounds: dict[int, PlannedRound] = {}  # planned rounds by epoch
        self._lead_pending: PlannedRound | None = None  # planned round whose losses are not yet folded in
        self._lead_records: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._lead_restored_pairs: list[tuple[int, float]] = []  # a resumed round's losses from before the checkpoint
        self._lead_capture: tuple[torch.Tensor, torch.Tensor] | None = None
        self._lead_started = False
        self._patch_forward_capture()
        self.add_callback(_FinishRoundAtLastStep(self))
        if args.max_steps <= 0:
            # One epoch of the Trainer is one round: turn `num_train_epochs` passes over the budget into steps
            settings = self._lead_settings
            rounds = math.ceil(args.num_train_epochs * settings.budget / settings.round_size) + settings.warmup_rounds
            self.args.max_steps = rounds * _steps_per_round(args, settings.round_size)

    # ----- set-up, all checks before any training work ---------------------------------------------------------------
    @staticmethod
    def _resolve_clusters(dataset: Dataset, args: LEADConfig, clusters) -> np.ndarray | None:
        if clusters is not None:
            clusters = np.asarray(clusters)
            if len(clusters) != len(dataset):
                raise ValueError(f"`clusters` has {len(clusters)} labels for {len(dataset)} samples; give one each.")
        elif args.lead_cluster_column is not None:
            if args.lead_cluster_column not in dataset.column_names:
                raise ValueError(
                    f"`lead_cluster_column={args.lead_cluster_column!r}` is not a column of the training dataset "
                    f"(columns: {dataset.column_names}). Name an existing column, or leave it unset to compute "
                    f"clusters (`lead_clusters`)."
                )
            clusters = np.asarray(dataset[args.lead_cluster_column])
        else:
            return None  # computed when training starts (needs the model)
        if clusters.dtype.kind not in "iu":
            _, clusters = np.unique(clusters.astype(str), return_inverse=True)
        elif clusters.min() < 0:
            raise ValueError("Cluster labels must be >= 0 (or strings).")
        return clusters.astype(np.int64)

    @staticmethod
    def _resolve_settings(args: LEADConfig, n: int) -> SelectionSettings:
        round_size, budget = resolve_sizes(args.lead_round_size, args.lead_budget, n)
        return SelectionSettings(
            round_size=round_size,
            budget=budget,
            max_reuse=args.lead_max_reuse,
            smoothing=args.lead_smoothing,
            gradient_correction=args.lead_gradient_correction,
            round_mode=args.lead_round_mode,
            fine_selection=args.lead_fine_selection,
            reward=args.lead_reward,
            warmup_rounds=math.ceil(args.lead_warmup_steps / _steps_per_round(args, round_size)),
        )

    @staticmethod
    def _resolve_policy(args: LEADConfig, policy):
        if policy is None:
            try:
                policy = make_policy(args.lead_policy)
            except ValueError as error:
                raise ValueError(f"`lead_policy={args.lead_policy!r}`: {error}") from error
        check_policy(policy, args.lead_round_mode)
        return policy

    def _check_trained_tokens(self, pool_size: int) -> None:
        """Every sample needs trained tokens for its IU; TRL silently drops rows truncation left fully masked."""
        dataset = self.train_dataset.select_columns(["labels", SAMPLE_ID])
        if dataset._indices is not None:
            dataset = dataset.flatten_indices()
        ids = np.asarray(dataset.data.column(SAMPLE_ID).to_numpy())
        trained = []
        for chunk in dataset.data.column("labels").chunks:  # vectorised over Arrow's flat label buffer
            offsets = chunk.offsets.to_numpy()
            counted = chunk.flatten().to_numpy() != -100
            starts = offsets[:-1][offsets[:-1] < offsets[1:]]
            counted[starts - offsets[0]] = False  # a sequence's first label is never predicted
            cumulative = np.concatenate([[0], np.cumsum(counted)])
            trained.append(cumulative[offsets[1:] - offsets[0]] - cumulative[offsets[:-1] - offsets[0]])
        trained = np.concatenate(trained) if trained else np.zeros(0, np.int64)
        missing = np.setdiff1d(np.arange(pool_size), ids)  # rows TRL dropped
        empty = np.union1d(ids[trained == 0], missing)
        if len(empty):
            raise ValueError(
                f"{len(empty)} training samples have no trained tokens (every label is -100 after "
                f"`assistant_only_loss`/`completion_only_loss`/`max_length` truncation), e.g. rows "
                f"{empty[:5].tolist()}; LEAD cannot score them. Drop them from the dataset, raise `max_length`, or "
                "check the chat template's generation markers."
            )

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self._lead and SAMPLE_ID not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, SAMPLE_ID]

    def _get_train_sampler(self, train_dataset=None):
        if not self._lead:
            return super()._get_train_sampler(train_dataset)
        return _RoundSampler(self, self._lead_settings.round_size)

    # ----- recording IU inside compute_loss ------------------------------------------------------------------------
    def _patch_forward_capture(self) -> None:
        """Keep the per-token outputs of the fused forward that `SFTTrainer.compute_loss` runs anyway.

        The fused forward is an instance attribute set by TRL's `add_fused_lm_head`; it is wrapped, not hooked,
        because PEFT calls the base model's `forward` directly, bypassing module hooks.
        """
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        fused_forward = base.forward

        def forward(*args, **kwargs):
            outputs = fused_forward(*args, **kwargs)
            if kwargs.get("fused_lm_head") and self._lead_capture is None:
                self._lead_capture = (outputs.log_probs, outputs.label_mask)
            return outputs

        base.forward = forward

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids = inputs.pop(SAMPLE_ID, None)
        if not self._lead or ids is None or not self.model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self._lead_capture = None
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        log_probs, label_mask = self._lead_capture
        self._lead_capture = None
        sums, counts = per_sample_loss(log_probs, label_mask, inputs.get("position_ids"))
        # Kept on the device until the round ends: no host sync per step
        self._lead_records.append((ids.to(sums.device), sums, counts))
        return result

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs.pop(SAMPLE_ID, None)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    # ----- rounds ----------------------------------------------------------------------------------------------------
    def _all_ranks_pairs(self) -> list[tuple[int, float]]:
        """(id, IU) of every sample recorded so far in this round, from every rank (a collective call)."""
        if self._lead_records:
            ids = torch.cat([r[0] for r in self._lead_records]).cpu().numpy()
            sums = torch.cat([r[1] for r in self._lead_records]).cpu().numpy()
            counts = torch.cat([r[2] for r in self._lead_records]).cpu().numpy()
            pairs = list(zip(ids.tolist(), (sums / np.maximum(counts, 1)).tolist()))
        else:
            pairs = []
        pairs = self._lead_restored_pairs + pairs
        return gather_object(pairs) if self.accelerator.num_processes > 1 else pairs

    def _gathered_losses(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, IU) recorded since the last call, on every rank, each id once, sorted by id; clears the records."""
        pairs = self._all_ranks_pairs()
        self._lead_records, self._lead_restored_pairs = [], []
        # The last batch of a round may be padded with repeated samples on some ranks: keep each id once
        unique = dict(sorted(pairs, key=lambda p: p[0]))
        return np.fromiter(unique.keys(), np.int64, len(unique)), np.fromiter(unique.values(), float, len(unique))

    def _score_pool(self) -> np.ndarray:
        """Initial IU of every sample: one no-grad pass of the base model over the pool (`lead_initial_score`).

        Batches are the training batch size, so the pass never needs more memory than a training step (the fused LM
        head's chunk of logits grows with the tokens of a batch)."""
        loader = self._get_dataloader(
            dataset=self.train_dataset,
            description="LEAD scoring",
            batch_size=self.args.per_device_train_batch_size,
            sampler_fn=self._get_eval_sampler,
        )
        model = self.model_wrapped
        was_training = model.training
        model.eval()
        self._lead_records = []
        with torch.no_grad():
            for inputs in tqdm(loader, desc="LEAD initial scores", disable=not self.is_world_process_zero()):
                inputs = self._prepare_inputs(inputs)
                ids = inputs.pop(SAMPLE_ID)
                outputs = model(**inputs, fused_lm_head=True, use_cache=False)
                sums, counts = per_sample_loss(outputs.log_probs, outputs.label_mask, inputs.get("position_ids"))
                self._lead_records.append((ids.to(sums.device), sums, counts))
        model.train(was_training)
        ids, losses = self._gathered_losses()
        scores = np.full(len(self._lead_row_of_id), np.nan)
        scores[ids] = losses
        return scores

    def _start_rounds(self) -> None:
        args = self.args
        initial = self._score_pool() if args.lead_initial_score == "loss" else None
        if self._lead_clusters is None:
            from .clustering import compute_clusters

            # Rank 0 computes and caches on disk; the other ranks then read the cache
            with self.accelerator.main_process_first():
                self._lead_clusters = compute_clusters(
                    self.model,
                    self.processing_class,
                    self._lead_pool,
                    how=args.lead_clusters,
                    k=args.lead_num_clusters,
                    seed=args.lead_seed,
                    conditional_losses=initial,
                    max_length=args.max_length,
                    append_eos=True,  # the trainer's losses include the end-of-turn token
                )
        if self.lead_state is None:
            self._make_state(self._lead_clusters)
        if initial is not None:
            self.lead_state.set_initial_scores(initial)
        self._lead_policy.reset(self.lead_state.num_clusters, seed=args.lead_seed)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self._lead_tracker = _UpdateTracker(trainable, args.lead_seed)
        self._lead_updates: dict[int, torch.Tensor] = {}  # per cluster: the update of the round that last trained it
        self._lead_started = True

    def _make_state(self, clusters: np.ndarray) -> None:
        self.lead_state = LEADState(clusters)
        self._lead_selector = RoundSelector(
            self.lead_state, self._lead_policy, self._lead_settings, self.args.lead_seed
        )

    def _round_rows(self, epoch: int) -> np.ndarray:
        """Dataset rows of the round trained in Trainer epoch `epoch` (planned once, then replayed)."""
        if epoch not in self._lead_rounds:
            if not self._lead_started:
                self._start_rounds()
            if self._lead_pending is not None:
                self._finish_round(self._lead_pending)
            planned = self._lead_selector.plan_round()
            if planned is None or len(planned.sample_ids) == 0:
                self.control.should_training_stop = True
                return np.zeros(0, np.int64)
            self._lead_rounds[epoch] = self._lead_pending = planned
            self._lead_round_start = (self._lead_tracker.snapshot(), time.perf_counter())
            self._lead_round_end_step = self.state.global_step + _steps_per_round(self.args, len(planned.sample_ids))
        return self._lead_row_of_id[self._lead_rounds[epoch].sample_ids]

    def _cosines(self, update: torch.Tensor, others: dict[int, torch.Tensor]) -> dict[int, float]:
        """Cosine of `update` with each of `others`, from dot products summed over ranks.

        Every rank then gets the same numbers (ranks must agree to choose the same rounds), and where parameters are
        sharded (ZeRO-3, FSDP) the sums over local shards give the global dot products; with replicated parameters
        (DDP) every term is multiplied by the number of ranks, which leaves the cosine unchanged.
        """
        keys = sorted(others)
        sums = torch.tensor(
            [
                float(update @ update),
                *(float(update @ others[k]) for k in keys),
                *(float(others[k] @ others[k]) for k in keys),
            ],
            dtype=torch.float64,
            device=self.accelerator.device,
        )
        if self.accelerator.num_processes > 1:
            sums = self.accelerator.reduce(sums, reduction="sum")
        sums = sums.cpu()
        result = {}
        for i, k in enumerate(keys):
            norm = float(torch.sqrt(sums[0] * sums[1 + len(keys) + i]))
            result[k] = float(sums[1 + i]) / norm if norm > 0 else 1.0
        return result

    def _finish_round(self, planned: PlannedRound, log_now: bool = True) -> dict[str, Any]:
        ids, losses = self._gathered_losses()
        start_vector, start_time = self._lead_round_start
        update = self._lead_tracker.snapshot() - start_vector
        present = np.unique(self.lead_state.cluster[ids]).tolist()
        cosines = self._cosines(update, {k: self._lead_updates[k] for k in present if k in self._lead_updates})
        for k in present:
            self._lead_updates[k] = update
        peak_lr = self.args.learning_rate
        eta = self._get_learning_rate() / peak_lr if peak_lr > 0 else 0.0
        record = self._lead_selector.finish_round(
            planned,
            ids,
            losses,
            eta=eta,
            cos_with_last_visit=cosines,
            extra={"step": self.state.global_step, "wall_time": time.perf_counter() - start_time},
        )
        self._lead_pending = None
        if self.is_world_process_zero():
            os.makedirs(self.args.output_dir, exist_ok=True)
            with open(os.path.join(self.args.output_dir, ROUNDS_FILE), "a") as f:
                f.write(json.dumps(record) + "\n")
        cluster = record["cluster"]
        self._lead_log = {
            "lead/round": record["round"],
            "lead/cluster": cluster if isinstance(cluster, int) else -1,
            "lead/reward": record["reward"],
            "lead/selected": record["selected"],
            "lead/mean_idu": record["mean_idu"],
        }
        if log_now:
            # Outside a training step (after the last one): log on our own, without TRL's per-step metrics
            Trainer.log(self, self._lead_log)
            self._lead_log = None
        return record

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # A round that ended at this step adds its metrics to the step's log (calling `log` from inside the step
        # would reset the Trainer's `should_log` and drop the step's loss)
        if getattr(self, "_lead_log", None) and "loss" in logs:
            logs = {**logs, **self._lead_log}
            self._lead_log = None
        super().log(logs, start_time)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if self._lead and resume_from_checkpoint:
            if resume_from_checkpoint is True:
                resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
                if resume_from_checkpoint is None:
                    raise ValueError(f"No checkpoint found in output_dir ({self.args.output_dir}) to resume from.")
            self.load_lead_state(resume_from_checkpoint)
        output = super().train(resume_from_checkpoint, *args, **kwargs)
        if self._lead and self._lead_pending is not None:
            self._finish_round(self._lead_pending)  # fold in the last round's losses
        return output

    # ----- checkpoints -----------------------------------------------------------------------------------------------
    def _pool_fingerprint(self) -> str:
        """Identifies the pool: its size, clusters and the tokens of up to 1,000 evenly spaced samples."""
        if getattr(self, "_lead_fingerprint", None) is None:
            digest = hashlib.sha256(np.ascontiguousarray(self.lead_state.cluster).tobytes())
            rows = np.unique(np.linspace(0, len(self.train_dataset) - 1, 1000).astype(int))
            sample = self.train_dataset.select(rows)
            for sample_id, input_ids in zip(sample[SAMPLE_ID], sample["input_ids"]):
                digest.update(np.asarray([sample_id, *input_ids], dtype=np.int64).tobytes())
            self._lead_fingerprint = digest.hexdigest()
        return self._lead_fingerprint

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self._lead and self._lead_started:
            pending = self._all_ranks_pairs()  # collective: every rank's losses of the unfinished round
            if self.is_world_process_zero():
                folder = os.path.join(self._get_output_dir(trial), f"checkpoint-{self.state.global_step}")
                self.save_lead_state(folder, pending)

    def save_lead_state(self, folder: str, pending_pairs: list[tuple[int, float]] | None = None) -> None:
        """Write `lead_state.npz` and `lead_policy.json` into `folder`, each to a temp file renamed into place.

        Besides the per-sample state they hold what an exact resume needs: the policy's and the selector's random
        state, the unfinished round's plan and the losses it has recorded, and the update vectors of the gradient
        correction.
        """
        os.makedirs(folder, exist_ok=True)
        arrays = dict(self.lead_state.state_dict())
        for k, update in self._lead_updates.items():
            arrays[f"update_{k}"] = update.numpy()
        plan = None
        if self._lead_pending is not None:
            epoch = next(e for e, planned in self._lead_rounds.items() if planned is self._lead_pending)
            arrays["round_start"] = self._lead_round_start[0].numpy()
            plan = {
                "epoch": epoch,
                "end_step": self._lead_round_end_step,
                "planned": {
                    **vars(self._lead_pending),
                    "sample_ids": self._lead_pending.sample_ids.tolist(),
                    "filled": self._lead_pending.filled.tolist(),
                },
                "losses": pending_pairs or [],
            }
        meta = {
            "fingerprint": self._pool_fingerprint(),
            "policy": self._lead_policy.state_dict() if hasattr(self._lead_policy, "state_dict") else None,
            "selector": self._lead_selector.state_dict(),
            "rounds": self.lead_state.rounds,
            "pending": plan,
        }
        _atomic_write(folder, STATE_FILE, lambda f: np.savez(f, **arrays), binary=True)
        _atomic_write(folder, POLICY_FILE, lambda f: json.dump(meta, f))

    def load_lead_state(self, folder: str) -> None:
        """Restore what `save_lead_state` wrote; a missing, damaged or foreign state is an error, never a restart."""
        paths = [os.path.join(folder, name) for name in (STATE_FILE, POLICY_FILE)]
        try:
            with np.load(paths[0]) as npz:
                arrays = {key: npz[key] for key in npz.files}
            with open(paths[1]) as f:
                meta = json.load(f)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
            raise ValueError(
                f"Cannot read the LEAD state of checkpoint {folder} ({type(error).__name__}: {error}). The checkpoint "
                f"is incomplete or damaged (e.g. the job was killed while saving); resume from an earlier checkpoint."
            ) from error
        if self.lead_state is None:
            self._make_state(arrays["cluster"])
        if meta.get("fingerprint") != self._pool_fingerprint():
            raise ValueError(
                f"Checkpoint {folder} was saved for another training pool (dataset or clusters differ from this "
                "trainer's). Resume with the same `train_dataset` and clusters, or start a new run."
            )
        self.lead_state.load_state_dict(arrays, rounds=meta["rounds"])
        self._lead_selector.load_state_dict(meta["selector"])
        if meta["policy"] is not None:
            self._lead_policy.reset(self.lead_state.num_clusters, seed=self.args.lead_seed)
            self._lead_policy.load_state_dict(meta["policy"])
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self._lead_tracker = _UpdateTracker(trainable, self.args.lead_seed)
        self._lead_updates = {
            int(key.removeprefix("update_")): torch.from_numpy(value)
            for key, value in arrays.items()
            if key.startswith("update_")
        }
        self._lead_rounds, self._lead_pending, self._lead_restored_pairs = {}, None, []
        pending = meta["pending"]
        if pending is not None:
            planned = dict(pending["planned"])
            planned["sample_ids"] = np.asarray(planned["sample_ids"], dtype=np.int64)
            planned["filled"] = np.asarray(planned["filled"], dtype=bool)
            self._lead_rounds[pending["epoch"]] = self._lead_pending = PlannedRound(**planned)
            self._lead_round_start = (torch.from_numpy(arrays["round_start"]), time.perf_counter())
            self._lead_round_end_step = pending["end_step"]
            self._lead_restored_pairs = [tuple(pair) for pair in pending["losses"]]
        self._lead_started = True
        if self.is_world_process_zero():
            # The round log restarts from the checkpoint's rounds, so a resumed run's log equals an uninterrupted one
            os.makedirs(self.args.output_dir, exist_ok=True)
            lines = "".join(json.dumps(record) + "\n" for record in meta["rounds"])
            _atomic_write(self.args.output_dir, ROUNDS_FILE, lambda f: f.write(lines))


def _steps_per_round(args: LEADConfig, round_size: int) -> int:
    """Optimizer steps of one round: its batches over all ranks, grouped by gradient accumulation."""
    batches = math.ceil(round_size / (args.per_device_train_batch_size * max(args.world_size, 1)))
    return math.ceil(batches / max(args.gradient_accumulation_steps, 1))


def _atomic_write(folder: str, name: str, write, binary: bool = False) -> None:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(folder, name))
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
