"""`LEADSFTTrainer`: TRL's `SFTTrainer` that trains in LEAD rounds chosen from losses it computes anyway."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
from accelerate.utils import broadcast_object_list, gather_object
from datasets import Dataset, IterableDataset, IterableDatasetDict
from torch.utils.data import Sampler
from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTTrainer
from trl.trainer.utils import get_config_model_id

from .config import LEADConfig
from .files import atomic_write
from .resolve import candidate_rows_of, given_clusters, resolve_policy, resolve_settings
from .rounds import SAMPLE_ID, CollatorWithIds, PoolScores, mean_hidden_states
from .run import RoundRun, round_metrics
from .selection import LEADState, PlannedRound, RoundSelector
from .settings import SelectionSettings, resolve_sizes
from .steps import budget_shortfall, run_steps, steps_per_round

logger = logging.getLogger(__name__)

STATE_FILE = "lead_state.npz"
POLICY_FILE = "lead_policy.json"
ROUNDS_FILE = "lead_rounds.jsonl"


class _RoundSampler(Sampler):
    """One Trainer epoch = one LEAD round. The round is chosen when the epoch's iterator is created, which the
    Trainer does after the previous epoch's last optimizer step, so the choice sees every loss of the last round.

    The epoch is the index of the round it trains, read from the rounds so far (`RoundRun.epoch_to_train`), not from
    `set_epoch`: when resuming mid-epoch under several processes, accelerate's skipping wrapper does not forward
    `set_epoch` to this sampler; nor from the step count, since the last rounds the reuse cap leaves short end their
    epochs early."""

    def __init__(self, run: RoundRun, rows_of: Callable[[int], np.ndarray], step: Callable[[], int], round_size: int):
        self.run, self.rows_of, self.step = run, rows_of, step
        self.round_size = round_size

    def set_epoch(self, epoch: int) -> None:
        pass  # see the class docstring

    def __len__(self) -> int:
        return self.round_size

    def __iter__(self):
        return iter(self.rows_of(self.run.epoch_to_train(self.step())).tolist())


class _FinishRoundAtLastStep(TrainerCallback):
    """Folds a round's losses in right after its last optimizer step, before the Trainer logs or saves; a round that
    training stops inside (`max_steps`, early stopping) is folded in at the end of its epoch, before the Trainer's
    summary log."""

    def __init__(self, run: RoundRun, finish: Callable[[], Any]):
        self.run, self.finish = run, finish

    def on_step_end(self, args, state, control, **kwargs):
        if self.run.in_flight is not None and state.global_step >= self.run.in_flight.end_step:
            self.finish()

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.run.in_flight is not None and control.should_training_stop:
            self.finish()


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

    Hooks, for code that needs more than the round log:
        - `score_pool()`: the initial scores; override it to give them from elsewhere.
        - `plan_round()`: the next round's plan; override it to change the state before planning, or the plan.
        - `on_round_end(args, state, control, record, trainer, **kwargs)`: a method of any callback passed in
          `callbacks` (or `add_callback`), called at the end of every round, after its losses are folded in, with the
          round's record (the dict appended to `lead_state.rounds` and `lead_rounds.jsonl`) and the trainer.

    Attributes:
        lead_state (`LEADState`): per-sample IU, IDU, use counts, clusters, and the list of rounds, over the pool: the
            rows of `train_dataset` that have a trained token after TRL's processing.
        lead_pool_rows (`np.ndarray`): the `train_dataset` row of each pool sample (with `lead_candidates`, the pool
            is the candidate subsample).
        lead_clustering (`dict`): what the clusters came from (`{"feature": "ifd" | "initial_loss" | "embedding" |
            "given" | "column ...", ...}`; `None` until computed clusters are computed).
        lead_settings (`SelectionSettings`): the selection settings, sizes as counts over the pool (read-only).
        lead_selector (`RoundSelector`): plans and folds in the rounds over `lead_state` (read-only; `None` until
            `lead_state` exists).
        lead_run (`RoundRun`): the run's rounds, which the trainer's hooks drive: `lead_state`, `lead_selector`, the
            policy, the update vectors of the gradient correction, the planned rounds and the round in flight
            (read-only).
    """

    def __init__(self, model=None, args: LEADConfig | None = None, *pargs, policy=None, clusters=None, **kwargs):
        if args is None:  # named as SFTTrainer names its default
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = LEADConfig(f"{model_name.split('/')[-1]}-SFT")
        train_dataset = kwargs.get("train_dataset", pargs[1] if len(pargs) > 1 else None)
        self._lead = isinstance(args, LEADConfig) and args.lead_enabled
        self._lead_settings: SelectionSettings | None = None
        self._lead_run: RoundRun | None = None  # the run's rounds
        self._lead_log: dict[str, Any] | None = None  # a round's metrics, for the Trainer's log of its last step
        if self._lead and isinstance(train_dataset, (IterableDataset, IterableDatasetDict)):
            raise ValueError(
                "LEAD selects from a pool of known size: `train_dataset` must be a `datasets.Dataset` (not an "
                f"iterable or streaming dataset), got {type(train_dataset).__name__}. Pass a map-style Dataset or set "
                "`lead_enabled=False`."
            )
        if not self._lead or not isinstance(train_dataset, Dataset):
            self._lead = False  # LEAD is off, or `train_dataset` is missing or of a type TRL refuses with its error
            super().__init__(model, args, *pargs, **kwargs)
            return
        n = len(train_dataset)
        self._lead_clusters = given_clusters(train_dataset, args, clusters)
        resolve_sizes(args.lead_round_size, args.lead_budget, n)  # checked against the dataset before the model loads
        policy = resolve_policy(args, policy)
        # `lead_candidates`: drawn before TRL processes the dataset, so that tokenizing follows the budget too
        candidate_rows = candidate_rows_of(args, n, self._lead_clusters)
        if candidate_rows is not None:
            train_dataset = train_dataset.select(candidate_rows)
        with_ids = train_dataset.add_column(SAMPLE_ID, np.arange(len(train_dataset)))
        if "train_dataset" in kwargs:
            kwargs["train_dataset"] = with_ids
        else:
            pargs = (pargs[0], with_ids, *pargs[2:])

        super().__init__(model, args, *pargs, **kwargs)

        self._check_parallelism()
        self._lead_dataset_size = len(train_dataset)  # the rows LEAD chooses among (the candidates, if drawn)
        self.lead_pool_rows, all_prompted = self._keep_trainable_rows(len(train_dataset))
        if candidate_rows is not None:
            self.lead_pool_rows = candidate_rows[self.lead_pool_rows]  # rows of the dataset the user gave
        pool_size = len(self.lead_pool_rows)
        self._lead_filter_groups = _filter_groups(args, all_prompted)
        # sizes are shares of the whole pool (of the dataset's rows when candidates were drawn from them); the
        # filter's share is of the samples it chooses among
        self._lead_settings = resolve_settings(args, pool_size if candidate_rows is None else n, pool_size)
        self._lead_settings.filter_groups = self._lead_filter_groups
        self._set_up_clusters(args, given=clusters is not None)
        self.data_collator = CollatorWithIds(self.data_collator)
        rows = np.asarray(self.train_dataset[SAMPLE_ID])
        self._lead_row_of_id = np.empty(pool_size, dtype=np.int64)
        self._lead_row_of_id[rows] = np.arange(len(rows))
        self._lead_fingerprint: str | None = None  # of the pool, once computed
        self._lead_run = RoundRun(self._lead_settings, policy, args.selection_seed)
        self._lead_run.losses.watch(self.model)
        if self._lead_clusters is not None:
            self._lead_run.make_state(self._lead_clusters)
        self.add_callback(_FinishRoundAtLastStep(self._lead_run, self._finish_round))
        self._warn_if_budget_ends_the_run_early()

    def _check_parallelism(self) -> None:
        parallelism = self.accelerator.parallelism_config
        if parallelism is not None and (parallelism.cp_enabled or getattr(parallelism, "sp_enabled", False)):
            raise ValueError(
                "LEAD needs each sample's whole loss on one rank; context/sequence parallelism splits it. Disable it "
                "or set `lead_enabled=False`."
            )

    def _set_up_clusters(self, args: LEADConfig, given: bool) -> None:
        """The pool's clusters where they are known (given or a column), what they came from, and how many to
        compute otherwise (at most one per sample)."""
        pool_size = len(self.lead_pool_rows)
        self.lead_clustering: dict[str, Any] | None = None  # what the clusters came from
        if self._lead_clusters is not None:
            self._lead_clusters = self._lead_clusters[self.lead_pool_rows]
            self.lead_clustering = {"feature": "given" if given else f"column {args.lead_cluster_column}"}
        self._lead_num_clusters = min(args.lead_num_clusters, pool_size)  # clusters to compute
        if self._lead_clusters is None and args.lead_num_clusters > pool_size:
            logger.warning(
                f"LEAD: `lead_num_clusters={args.lead_num_clusters}` is more than the {pool_size} trainable samples; "
                f"computing {pool_size} clusters, one per sample. Set `lead_num_clusters` to at most {pool_size} to "
                "silence this."
            )

    @property
    def lead_settings(self) -> SelectionSettings | None:
        return self._lead_settings

    @property
    def lead_run(self) -> RoundRun | None:
        """The run's rounds: state, selector, policy, update vectors, the round in flight (`None` with LEAD off)."""
        return self._lead_run

    @property
    def lead_state(self) -> LEADState | None:
        return self._lead_run.state if self._lead_run is not None else None

    @property
    def lead_selector(self) -> RoundSelector | None:
        return self._lead_run.selector if self._lead_run is not None else None

    @property
    def lead_max_steps(self) -> int | None:
        """Optimizer steps of the run (the Trainer's `state.max_steps` once it trains): `max_steps`, or without it
        `num_train_epochs` passes over the budget plus the warm-up, at most what the budget and `lead_max_reuse`
        allow (`None` with LEAD off)."""
        if self._lead_settings is None:
            return None
        settings = self._lead_settings
        return run_steps(self.args, settings.round_size, settings.budget, settings.warmup_rounds)[1]

    # ----- set-up, all checks before any training work ---------------------------------------------------------------
    def _warn_if_budget_ends_the_run_early(self) -> None:
        """Say, before training, when the budget and reuse cap cannot fill the steps or epochs asked for."""
        message = budget_shortfall(self.args, self._lead_settings)
        if message is not None:
            logger.warning(message)

    def _keep_trainable_rows(self, dataset_size: int) -> tuple[np.ndarray, bool]:
        """Leave out of the pool the rows with no trained token, as TRL drops rows that truncation left fully masked.

        TRL's filter keeps a row whose only trained label is its first one, which is never predicted; LEAD cannot
        score it either. Renumbers the id column so the pool's samples are 0..m-1 and returns the dataset row of
        each (`lead_pool_rows`), and whether every pool sample has a prompt (an untrained first label), which
        `lead_filter_groups="prompts"` needs."""
        dataset = self.train_dataset
        label_column = "labels" if "labels" in dataset.column_names else "input_ids"  # TRL's collator: labels = ids
        columns = dataset.select_columns([label_column, SAMPLE_ID])
        if columns._indices is not None:
            columns = columns.flatten_indices()
        ids = np.asarray(columns.data.column(SAMPLE_ID).to_numpy())
        trained, prompted = [], []
        for chunk in columns.data.column(label_column).chunks:  # vectorised over Arrow's flat label buffer
            offsets = chunk.offsets.to_numpy()
            counted = chunk.flatten().to_numpy() != -100
            nonempty = offsets[:-1] < offsets[1:]
            starts = offsets[:-1][nonempty]
            # a prompt: the first label is not trained (as `clustering.prompt_groups` decides)
            first_untrained = np.zeros(len(nonempty), bool)
            first_untrained[nonempty] = ~counted[starts - offsets[0]]
            prompted.append(first_untrained)
            counted[starts - offsets[0]] = False  # a sequence's first label is never predicted
            cumulative = np.concatenate([[0], np.cumsum(counted)])
            trained.append(cumulative[offsets[1:] - offsets[0]] - cumulative[offsets[:-1] - offsets[0]])
        keep = np.concatenate(trained) > 0 if trained else np.zeros(0, bool)
        pool_rows = np.sort(ids[keep])
        if len(pool_rows) == 0:
            raise ValueError(
                f"None of the {dataset_size} training samples has a trained token (every label is -100 after "
                "`assistant_only_loss`/`completion_only_loss`/`max_length` truncation); LEAD has nothing to select. "
                "Raise `max_length`, or check the chat template's generation markers."
            )
        if len(pool_rows) < dataset_size:
            logger.warning(
                "LEAD: %d of %d training rows have no trained token (every label is -100 after `assistant_only_loss`/"
                "`completion_only_loss`/`max_length` truncation) and are left out of the pool, as TRL drops them. "
                "`trainer.lead_pool_rows[i]` is the dataset row of pool sample i.",
                dataset_size - len(pool_rows),
                dataset_size,
            )
            dataset = dataset.select(np.flatnonzero(keep)).remove_columns(SAMPLE_ID)
            self.train_dataset = dataset.add_column(SAMPLE_ID, np.searchsorted(pool_rows, ids[keep]))
        return pool_rows, bool(np.concatenate(prompted)[keep].all())

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        if self._lead and packing and SAMPLE_ID in dataset.column_names:
            # LEAD selects samples, so the pool keeps one sample per row, truncated to `max_length` like unpacked rows.
            # The padding-free collator TRL uses with BFD packing then packs each batch's samples into one sequence
            # whose positions restart at every sample, as BFD does: samples stay whole, one loss per segment.
            if args.max_length is None:
                raise ValueError("When packing is enabled, `max_length` can't be `None`.")  # TRL's check
            dataset = super()._prepare_dataset(dataset, processing_class, args, False, formatting_func, dataset_name)
            # As TRL's packed rows, each row lists the lengths of the sequences it holds: here its one sample
            lengths = pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_pylist()
            return dataset.add_column("seq_lengths", [[n] for n in lengths])
        return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self._lead and SAMPLE_ID not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, SAMPLE_ID]

    def set_initial_training_values(self, args, dataloader):
        values = super().set_initial_training_values(args, dataloader)
        if not self._lead:
            return values
        _, steps_per_epoch, num_examples, _, total_batch_size, steps_in_epoch, _ = values
        max_steps = self.lead_max_steps
        # The run and its learning-rate schedule end at the steps the budget allows (not at `args.max_steps`, left
        # as the user set it). Epochs: one per round; the last rounds, left short by the reuse cap, may end their
        # epochs early, and an epoch with no round ends training, so `max_steps` epochs always suffice.
        return (
            max_steps,
            steps_per_epoch,
            num_examples,
            max_steps * total_batch_size,
            total_batch_size,
            steps_in_epoch,
            max_steps,
        )

    def _get_train_sampler(self, train_dataset=None):
        if not self._lead:
            return super()._get_train_sampler(train_dataset)
        return _RoundSampler(
            self._lead_run, self._round_rows, lambda: self.state.global_step, self._lead_settings.round_size
        )

    # ----- recording IU inside compute_loss ------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids = inputs.pop(SAMPLE_ID, None)
        if not self._lead or ids is None or not self.model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        with self._lead_run.losses.capture():
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self._lead_run.losses.record_captured(ids, inputs.get("position_ids"))
        return result

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs.pop(SAMPLE_ID, None)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    # ----- rounds ----------------------------------------------------------------------------------------------------
    def _all_ranks_pairs(self) -> list[tuple[int, float]]:
        """(id, IU) of every sample recorded so far in this round, from every rank (a collective call)."""
        pairs = self._lead_run.losses.pairs()
        return gather_object(pairs) if self.accelerator.num_processes > 1 else pairs

    def _gathered_losses(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, IU) recorded since the last call, on every rank, each id once, sorted by id; clears the records."""
        pairs = self._all_ranks_pairs()
        self._lead_run.losses.clear()
        # The last batch of a round may be padded with repeated samples on some ranks: keep each id once
        unique = dict(sorted(pairs, key=lambda p: p[0]))
        return np.fromiter(unique.keys(), np.int64, len(unique)), np.fromiter(unique.values(), float, len(unique))

    def score_pool(self) -> np.ndarray:
        """Initial IU of every sample: one no-grad pass of the base model over the pool (`lead_initial_score`).

        Batches are the training batch size, so the pass never needs more memory than a training step (the fused LM
        head's chunk of logits grows with the tokens of a batch).

        A hook: a subclass may override it to give initial scores from elsewhere (a cache, another model), one loss
        per pool sample in id order (NaN where none); they are also IFD's conditional losses when clusters are
        computed by IFD. Called once, when rounds start."""
        return self._forward_pass(self.train_dataset, "LEAD initial scores", prompts=False, sequences=False).losses

    def _initial_pass(self) -> PoolScores:
        """The initial scores, with the embeddings that the prompt groups (`lead_filter_groups="prompts"`) and
        `lead_clusters="embedding"` need read from the same forward; where a subclass gives the scores
        (`score_pool`), a pass for the embeddings alone when some are needed."""
        prompts = self._lead_filter_groups == "prompts" and self.args.lead_sample_filter == "small_loss"
        sequences = self._lead_clusters is None and self.args.lead_clusters == "embedding"
        if getattr(self.score_pool, "__func__", None) is LEADSFTTrainer.score_pool:  # not given by a subclass
            return self._forward_pass(self.train_dataset, "LEAD initial scores", prompts, sequences)
        losses = self.score_pool()
        if not (prompts or sequences):
            return PoolScores(losses)
        return self._forward_pass(self.train_dataset, "LEAD embeddings", prompts, sequences)._replace(losses=losses)

    def _forward_pass(self, dataset: Dataset, description: str, prompts: bool, sequences: bool) -> PoolScores:
        """Per-sample losses (and embeddings) of a dataset with an id column: one no-grad pass, split over the ranks
        as evaluation batches are, and gathered, so every rank takes part in every forward (as FSDP and ZeRO-3 need).
        Batches are the training batch size (see `score_pool`)."""
        loader = self._get_dataloader(
            dataset=dataset,
            description=description,
            batch_size=self.args.per_device_train_batch_size,
            sampler_fn=self._get_eval_sampler,
        )
        model = self.model_wrapped
        was_training = model.training
        model.eval()
        self._lead_run.losses.clear()
        hidden: list[torch.Tensor] = []
        hook = None
        if prompts or sequences:
            unwrapped = self.accelerator.unwrap_model(self.model)
            base = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
            # the fused forward returns no hidden states: read them from the backbone it calls
            hook = base.base_model.register_forward_hook(
                lambda module, args, out: hidden.append(out.last_hidden_state)
            )
        ids_seen, embedded = [], {"prompts": [], "sequences": []}
        try:
            with torch.no_grad():
                quiet = not self.is_world_process_zero() or self.args.disable_tqdm  # the Trainer's own bar setting
                for inputs in tqdm(loader, desc=description, disable=quiet):
                    inputs = self._prepare_inputs(inputs)
                    ids = inputs.pop(SAMPLE_ID)
                    hidden.clear()
                    outputs = model(**inputs, fused_lm_head=True, use_cache=False)
                    position_ids = inputs.get("position_ids")
                    self._lead_run.losses.record(ids, outputs.log_probs, outputs.label_mask, position_ids)
                    ids_seen.append(ids.cpu().numpy())
                    for key, wanted in (("prompts", prompts), ("sequences", sequences)):
                        if wanted:
                            pooled = mean_hidden_states(
                                hidden[-1],
                                inputs["labels"],
                                inputs.get("attention_mask"),
                                position_ids,
                                key == "prompts",
                            )
                            embedded[key].append(pooled[: len(ids)].cpu().numpy())
        finally:
            if hook is not None:
                hook.remove()
            model.train(was_training)
        ids, losses = self._gathered_losses()
        n = len(dataset)  # ids are 0..n-1
        scores = np.full(n, np.nan)
        scores[ids] = losses
        result = PoolScores(scores)
        for key, field_name in (("prompts", "prompt_embeddings"), ("sequences", "sequence_embeddings")):
            if embedded[key]:
                result = result._replace(**{field_name: self._gathered_rows(n, ids_seen, embedded[key])})
        return result

    def _gathered_rows(self, n: int, ids: list[np.ndarray], rows: list[np.ndarray]) -> np.ndarray:
        """The rows each rank computed for its ids, from every rank, in id order (a collective call)."""
        parts = [(np.concatenate(ids), np.concatenate(rows))]
        if self.accelerator.num_processes > 1:
            parts = gather_object(parts)
        out = np.empty((n, parts[0][1].shape[1]), dtype=np.float32)
        for part_ids, part_rows in parts:  # a sample repeated to even out the ranks' batches has the same row twice
            out[part_ids] = part_rows
        return out

    def _answer_alone_losses(self) -> np.ndarray | None:
        """Each sample's loss of its trained tokens alone (IFD's denominator), one pass split over the ranks; `None`
        where some sample has no prompt (IFD is undefined: the clusters then use the initial loss, with no pass)."""
        from .scoring import answer_alone_inputs, trained_tokens

        pool = self.train_dataset.select(self._lead_row_of_id)  # pool samples in id order
        answers, has_prompt = trained_tokens(
            pool["input_ids"], pool["labels"] if "labels" in pool.column_names else None
        )
        if not has_prompt.all():
            return None
        input_ids, labels = answer_alone_inputs(self._tokenizer, answers)
        alone = Dataset.from_dict({"input_ids": input_ids, "labels": labels, SAMPLE_ID: np.arange(len(answers))})
        return self._forward_pass(alone, "LEAD answers alone", prompts=False, sequences=False).losses

    def _on_main_process(self, compute):
        """`compute()` on the main process, its result sent to every rank (CPU work: k-means, no forward)."""
        if self.accelerator.num_processes == 1:
            return compute()
        result = [compute() if self.accelerator.is_main_process else None]
        return broadcast_object_list(result, from_process=0)[0]

    def _start_rounds(self) -> None:
        args = self.args
        compute_ifd = self._lead_clusters is None and args.lead_clusters == "ifd"
        # One scoring pass gives the initial IU, IFD's conditional loss and the embeddings the groups need
        needs_pass = args.lead_initial_score == "loss" or self._lead_clusters is None
        scores = self._initial_pass() if needs_pass else None
        if self._lead_clusters is None:
            from .clustering import pool_clusters

            # From what the trainer trains on: the processed tokens, and labels marking the trained (answer) tokens
            pool = self.train_dataset.select(self._lead_row_of_id)  # pool samples in id order
            labels = pool["labels"] if "labels" in pool.column_names else None
            alone = self._answer_alone_losses() if compute_ifd else None
            result = self._on_main_process(
                lambda: pool_clusters(
                    self.model,
                    self._tokenizer,
                    pool["input_ids"],
                    labels,
                    conditional_losses=scores.losses if compute_ifd else None,
                    how=args.lead_clusters,
                    k=self._lead_num_clusters,
                    seed=args.selection_seed,
                    batch_size=args.per_device_train_batch_size,
                    show_progress=self.is_world_process_zero(),
                    alone_losses=alone,
                    embeddings=scores.sequence_embeddings,
                )
            )
            self._lead_clusters = result.labels
            self.lead_clustering = result.describe()
        groups = None
        if scores is not None and scores.prompt_embeddings is not None:
            from .clustering import embedding_groups

            seed = args.selection_seed
            groups = self._on_main_process(lambda: embedding_groups(scores.prompt_embeddings, seed=seed))
        initial = scores.losses if args.lead_initial_score == "loss" else None
        self._lead_run.start(self._lead_clusters, self._trainable_parameters(), initial, groups)

    def _trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _round_rows(self, epoch: int) -> np.ndarray:
        """Dataset rows of the round trained in Trainer epoch `epoch` (planned once, then replayed)."""
        run = self._lead_run
        if epoch not in run.plans and not self._begin_round(epoch):
            self.control.should_training_stop = True
            return np.zeros(0, np.int64)
        return self._lead_row_of_id[run.plans[epoch].sample_ids]

    def _begin_round(self, epoch: int) -> bool:
        """Fold in the round before, then plan the round of Trainer epoch `epoch`; False when none is left to train."""
        run = self._lead_run
        if not run.started:
            self._start_rounds()
        if run.in_flight is not None:
            self._finish_round()
        return run.begin(epoch, self.plan_round, self.state.global_step, lambda n: steps_per_round(self.args, n))

    def plan_round(self) -> PlannedRound | None:
        """The next round's plan (`lead_selector.plan_round()`), or None when no sample is eligible.

        A hook: a subclass may override it to change `lead_state` before the plan (e.g. `lead_state.set_idu` with
        fresh scores) or to change the plan. Called once per round, after the round before was folded in."""
        return self._lead_run.selector.plan_round()

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

    def _finish_round(self) -> dict[str, Any]:
        """Fold the round in flight's losses in (`RoundRun.finish`), append its record to the round log, send the
        round-end event, and keep its metrics for the Trainer's next training log entry (see `log`)."""
        run = self._lead_run
        first = run.in_flight.planned.index == 0
        ids, losses = self._gathered_losses()
        peak_lr = self.args.learning_rate
        eta = self._get_learning_rate() / peak_lr if peak_lr > 0 else 0.0
        # The first round also says what the pool and its clusters are made of
        extra = {"pool": self._pool_description()} if first else None
        record = run.finish(ids, losses, eta, self._cosines, self.state.global_step, extra)
        if self.is_world_process_zero():
            os.makedirs(self.args.output_dir, exist_ok=True)
            with open(os.path.join(self.args.output_dir, ROUNDS_FILE), "a") as f:
                f.write(json.dumps(record) + "\n")
        for callback in self.callback_handler.callbacks:  # the round-end event (see the class docstring)
            on_round_end = getattr(callback, "on_round_end", None)
            if callable(on_round_end):
                on_round_end(self.args, self.state, self.control, record=record, trainer=self)
        self._lead_log = round_metrics(record)
        return record

    def _pool_description(self) -> dict[str, Any]:
        return {
            "samples": len(self.lead_pool_rows),
            "dropped_rows": int(self._lead_dataset_size - len(self.lead_pool_rows)),
            "clusters": self.lead_clustering,
        }

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # As SFTTrainer adds its own metrics: the last round finished since the previous entry adds its metrics to
        # the Trainer's next training entry (a step's, with `loss`, or the run's summary, with `train_loss`), so
        # `log_history` has SFTTrainer's entries; `lead_rounds.jsonl` has every round
        if self._lead_log and ("loss" in logs or "train_loss" in logs):
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
        if self._lead and self._lead_run.in_flight is not None:
            self._finish_round()  # fold in the last round's losses (a stop the callback missed: round log only)
        return output

    # ----- checkpoints -----------------------------------------------------------------------------------------------
    def _pool_fingerprint(self) -> str:
        """Identifies the pool: its size, clusters and the tokens of up to 1,000 evenly spaced samples."""
        if self._lead_fingerprint is None:
            digest = hashlib.sha256(np.ascontiguousarray(self.lead_state.cluster).tobytes())
            rows = np.unique(np.linspace(0, len(self.train_dataset) - 1, 1000).astype(int))
            sample = self.train_dataset.select(rows)
            for sample_id, input_ids in zip(sample[SAMPLE_ID], sample["input_ids"]):
                digest.update(np.asarray([sample_id, *input_ids], dtype=np.int64).tobytes())
            self._lead_fingerprint = digest.hexdigest()
        return self._lead_fingerprint

    def _save_checkpoint(self, model, trial):
        # The LEAD state goes in first: transformers' save ends by deleting the checkpoints beyond
        # `save_total_limit`, so a kill at any moment leaves either the old checkpoint or a complete new one
        if self._lead and self._lead_run.started:
            pending = self._all_ranks_pairs()  # collective: every rank's losses of the unfinished round
            if self.is_world_process_zero():
                folder = os.path.join(self._get_output_dir(trial), f"checkpoint-{self.state.global_step}")
                self.save_lead_state(folder, pending)
        super()._save_checkpoint(model, trial)

    def save_lead_state(self, folder: str, pending_pairs: list[tuple[int, float]] | None = None) -> None:
        """Write `lead_state.npz` and `lead_policy.json` into `folder`, each to a temp file renamed into place.

        Besides the per-sample state they hold what an exact resume needs: the policy's and the selector's random
        state, the unfinished round's plan and the losses it has recorded, and the update vectors of the gradient
        correction.
        """
        os.makedirs(folder, exist_ok=True)
        arrays, meta = self._lead_run.checkpoint(pending_pairs or [])
        meta = {"fingerprint": self._pool_fingerprint(), **meta}
        with atomic_write(os.path.join(folder, STATE_FILE), "wb") as f:
            np.savez(f, **arrays)
        with atomic_write(os.path.join(folder, POLICY_FILE)) as f:
            json.dump(meta, f)

    def load_lead_state(self, folder: str) -> None:
        """Restore what `save_lead_state` wrote; a missing, damaged or foreign state is an error, never a restart."""
        paths = [os.path.join(folder, name) for name in (STATE_FILE, POLICY_FILE)]
        try:
            if not os.path.isfile(os.path.join(folder, TRAINER_STATE_NAME)):  # written last: the save did not end
                raise FileNotFoundError(f"no {TRAINER_STATE_NAME}")
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
            self._lead_run.make_state(arrays["cluster"])
        if meta.get("fingerprint") != self._pool_fingerprint():
            raise ValueError(
                f"Checkpoint {folder} was saved for another training pool (dataset or clusters differ from this "
                "trainer's). Resume with the same `train_dataset` and clusters, or start a new run."
            )
        self._lead_run.restore(arrays, meta, self._trainable_parameters())
        if self.is_world_process_zero():
            # The round log restarts from the checkpoint's rounds, so a resumed run's log equals an uninterrupted one
            os.makedirs(self.args.output_dir, exist_ok=True)
            lines = "".join(json.dumps(record) + "\n" for record in meta["rounds"])
            with atomic_write(os.path.join(self.args.output_dir, ROUNDS_FILE)) as f:
                f.write(lines)


def _filter_groups(args: LEADConfig, all_prompted: bool) -> str:
    """`lead_filter_groups`, or `"clusters"` (with a warning) where prompt groups are asked for and some sample has
    no prompt."""
    if args.lead_filter_groups == "prompts" and args.lead_sample_filter == "small_loss" and not all_prompted:
        logger.warning(
            "LEAD: `lead_filter_groups='prompts'` compares answers to similar prompts, and some samples have no "
            "prompt (their first token is trained: language-modeling rows, or `assistant_only_loss`/"
            "`completion_only_loss` off), so the small-loss filter compares within clusters instead "
            "(`lead_filter_groups='clusters'`)."
        )
        return "clusters"
    return args.lead_filter_groups
