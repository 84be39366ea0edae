"""``trl_lead/LiveTraining-v0``: each step is one real LEAD round of ``LEADSFTTrainer`` on the embedded default.

Slow and exact: the same trainer, model and pool as ``trl-lead demo`` (a small slice of the pool by default, so a
step takes about a second on a CPU), driven one round per ``step`` by any policy that drives the other envs.

torch, transformers and trl are imported inside methods only, so importing this module (or ``envs``) stays light.
"""

from __future__ import annotations

import math
import queue
import shutil
import tempfile
import threading
from typing import Any

import numpy as np

from envs.round_env import ActionPolicy, RoundEnv
from trl_lead.settings import PRESET_FIELDS, preset_settings

__all__ = ["LiveTraining"]


class _Stop(Exception):
    """Raised inside the training thread to end ``trainer.train()`` when the env is closed or reset."""


class _BlockingPolicy(ActionPolicy):
    """The env's action as the trainer's bandit policy: the trainer's thread blocks in it until ``step`` supplies one.

    In single mode the trainer calls ``select(mask)`` (then ``probabilities``, answered with the same action); in
    mixture mode it calls ``probabilities(mask)``. Either way the first call of a round posts ``("action", mask)``
    to the env and waits for the action (or ``_STOP``).
    """

    def __init__(self, num_arms: int, mixture: bool, requests: queue.Queue, actions: queue.Queue) -> None:
        super().__init__(num_arms, mixture)
        self.requests = requests
        self.actions = actions

    def _await(self, mask: np.ndarray | None) -> None:
        mask = np.ones(self.num_arms, bool) if mask is None else np.asarray(mask, bool).copy()
        self.requests.put(("action", mask))
        action = self.actions.get()
        if action is _STOP:
            raise _Stop
        self.action = action

    def select(self, mask: np.ndarray | None = None) -> int:
        self._await(mask)
        return super().select(mask)

    def probabilities(self, mask: np.ndarray | None = None) -> np.ndarray:
        if self.mixture:
            self._await(mask)
        return super().probabilities(mask)


_STOP = object()
_BASES: dict[str | None, Any] = {}  # load_embedded_default() per cache folder, shared by every LiveTraining
_INITIAL_SCORES: dict[tuple, np.ndarray] = {}  # the base model's loss per pool sample: the same in every episode
_BASE_QUALITY: dict[tuple, tuple[float, dict]] = {}  # the base model's quality, per (cache folder, eval_size)


class LiveTraining(RoundEnv):
    """One real ``LEADSFTTrainer`` round per step on the embedded default (tiny Llama, generated pool).

    ## Description

    ``reset`` builds a ``LEADSFTTrainer`` on the warmed-up embedded model (``trl_lead.embedded.load_embedded_default``,
    built once and cached) and the first ``pool_size`` rows of its generated pool (shuffled, so every family is
    present), with ``lead_cluster_column="family_id"`` (K = 8 families), fp32 on the CPU, and starts
    ``trainer.train()`` in a background thread. The trainer's bandit policy is an adapter that blocks until ``step``
    supplies the action: each ``step`` hands the action over, the trainer trains that round (ordinary optimizer
    steps, real losses as IU, the trainer's own gradient correction) and blocks again when it plans the next round,
    and ``step`` returns that round's record from ``trainer.lead_state.rounds``. Nothing of the trainer is
    re-implemented: a policy driving this env meets exactly what it would meet as ``LEADSFTTrainer(policy=...)``.

    ## Action Space

    As ``ProxyTraining``: ``Discrete(8)`` (``round_mode="single"``), a masked cluster being a ``ValueError``;
    ``Box(0, 1, (8,), float32)`` arm weights in mixture mode.

    ## Observation Space

    As ``ProxyTraining``: ``Box(float32, (16,))``, per cluster the mean IDU (NaN -> 0, clipped to +-``IDU_BOUND``)
    then per cluster the fraction of its samples still eligible.

    ## Rewards

    ``record["reward"]`` of the round, as the trainer computes it (``lead_reward``), raw.

    ## Episode End

    ``terminated`` when no sample is eligible any more; ``truncated`` after ``max_rounds`` steps (the trainer's
    ``max_steps`` is set to exactly that many rounds plus the warm-up).

    ## Info

    ``expected_rewards``: all NaN (a real run does not know what the other arms would have given; running them
    would cost K trainings per step), ``regret``: NaN. ``action_mask`` for the next step, the round's ``round``,
    ``cluster``, ``selected``, ``filled``, ``cluster_rewards``, ``mean_idu``, ``step`` (the trainer's global step)
    and ``wall_time`` (seconds of the round). ``env.unwrapped.trainer`` is the live trainer.

    ``quality`` (the key ``ProxyTraining`` shares, higher is better, on a [0, 1] scale): the trained model's held-out
    exact match over the learnable families (every family but ``noise``), as a fraction: greedy answers to the
    embedded pool's held-out rows (``eval_size`` per family), compared with the references by
    ``trl_lead.embedded.exact_match``. ``quality_detail``: ``{"exact_match": [...], "loss": [...], "families": [...],
    "exact_match_learnable": float, "loss_learnable": float}``, per family in ``family_id`` order the exact match
    (fraction) and the mean held-out answer loss (``trl_lead.scoring.answer_losses`` with EOS, the tokens SFT trains
    on), and both over the learnable families (means over their rows). Both keys are in the info of ``reset`` (the
    warmed-up base model, evaluated once per process and cached), of the step that ends the episode, and of every
    ``eval_every``-th step; on other steps ``quality`` is NaN and ``quality_detail`` absent. The evaluation runs while
    the trainer waits for the next action, so it never sees a half-trained round, and takes about a second or two.

    ## Arguments

    | argument | default | meaning |
    |---|---|---|
    | ``pool_size`` | 400 | rows of the embedded pool used (the first ones; at most 2000) |
    | ``round_size`` | 16 | samples per round (``lead_round_size``) |
    | ``budget`` | 0.5 | ``lead_budget`` |
    | ``batch_size`` | 8 | ``per_device_train_batch_size`` |
    | ``learning_rate`` | 2e-3 | constant schedule, as ``trl-lead demo`` |
    | ``max_rounds`` | 20 | steps before truncation (``max_steps`` is an alias, as ``envs.benchmark`` sets it) |
    | ``preset`` | "default" | ``lead_preset``: the trainer's selection settings (``trl_lead.settings.PRESETS``) |
    | other preset settings | the preset's | ``lead_*`` names without ``lead_``: ``round_mode``, ``reward``, ... |
    | ``warmup_steps`` | 0 | ``lead_warmup_steps`` (run inside ``reset``) |
    | ``lead_kwargs`` | None | more ``LEADConfig`` fields |
    | ``cache_dir`` | None | warm-up cache of the embedded model (``$TRL_LEAD_CACHE`` or ``~/.cache/trl_lead``) |
    | ``output_dir`` | None | folder of ``episode-<n>/lead_rounds.jsonl``; None: a temp dir, removed on close |
    | ``num_threads`` | 1 | torch threads while training (1 is fastest for the tiny model on a busy CPU) |
    | ``step_timeout`` | 600 | seconds ``reset``/``step`` wait for the trainer before raising ``TimeoutError`` |
    | ``eval_every`` | 0 | also evaluate ``quality`` after every n-th step (0: only when the episode ends) |
    | ``eval_size`` | 50 | held-out rows per family evaluated (at most 50, the embedded pool's held-out set) |

    The trainer runs ``LEADConfig``'s selection: the preset's settings (``self.selection``), with those given here
    (``round_mode="single"``, ``reward``, ``max_reuse``, ``initial_score``, ...; not ``policy``: the agent acting on
    the env is the policy) or in ``lead_kwargs`` overriding them. The trainer's ``seed`` and ``lead_seed`` are drawn
    from ``self.np_random``, so ``reset(seed=s)`` fixes them.
    Always ``close()`` the env (or use it in a ``with`` block): it stops the training thread.
    """

    num_clusters = 8  # trl_lead.embedded.FAMILIES, not imported here (it imports torch)

    def __init__(
        self,
        pool_size: int = 400,
        round_size: int = 16,
        budget: float = 0.5,
        batch_size: int = 8,
        learning_rate: float = 2e-3,
        max_rounds: int = 20,
        max_steps: int | None = None,
        warmup_steps: int = 0,
        lead_kwargs: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        output_dir: str | None = None,
        num_threads: int | None = 1,
        step_timeout: float = 600.0,
        eval_every: int = 0,
        eval_size: int = 50,
        render_mode: str | None = None,
        preset: str = "default",
        **selection: Any,
    ) -> None:
        if render_mode is not None:
            raise ValueError("LiveTraining has no rendering; use render_mode=None")
        if "policy" in selection:
            raise ValueError("LiveTraining takes no `policy`: the agent acting on the env is the policy.")
        if int(eval_every) < 0:
            raise ValueError(f"eval_every={eval_every} must be >= 0 (0: evaluate only when the episode ends).")
        if not 1 <= int(eval_size) <= 50:
            raise ValueError(f"eval_size={eval_size} must be in [1, 50] (held-out rows per family).")
        if not 8 <= int(pool_size) <= 2000:
            raise ValueError(f"pool_size={pool_size} must be in [8, 2000] (the embedded pool has 2000 rows).")
        self.max_rounds = int(max_steps if max_steps is not None else max_rounds)
        if self.max_rounds < 1 or int(round_size) < 1 or int(batch_size) < 1:
            raise ValueError("max_rounds, round_size and batch_size must be >= 1.")
        self.pool_size = int(pool_size)
        self.lead_kwargs = {
            "lead_round_size": int(round_size),
            "lead_budget": budget,
            "lead_warmup_steps": int(warmup_steps),
            "lead_preset": preset,
            **{f"lead_{name}": value for name, value in selection.items()},
            **(lead_kwargs or {}),
        }
        # The trainer's settings: the preset, with the settings given here overriding it (checked now, not at reset)
        chosen = {name: self.lead_kwargs.get(f"lead_{name}") for name in PRESET_FIELDS}
        self.selection = preset_settings(self.lead_kwargs["lead_preset"], **chosen)
        self.round_size = int(self.lead_kwargs["lead_round_size"])
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.cache_dir = cache_dir
        self.output_dir = output_dir
        self.num_threads = num_threads
        self.step_timeout = float(step_timeout)
        self.eval_every = int(eval_every)
        self.eval_size = int(eval_size)
        self.render_mode = render_mode
        self.mixture = self.selection["round_mode"] == "mixture"
        self._make_spaces()
        self.trainer: Any = None
        self._thread: threading.Thread | None = None
        self._requests: queue.Queue = queue.Queue()
        self._actions: queue.Queue = queue.Queue()
        self._mask = np.zeros(self.num_clusters, bool)
        self._finished = True
        self._steps = 0
        self._episodes = 0
        self._temp_dir: str | None = None
        self._base: Any = None

    # ------------------------------------------------------------------ the training thread
    def _load_base(self) -> Any:
        """The embedded default, loaded once per process and cache folder (it is only read: model path, pool)."""
        if self._base is None:
            if self.cache_dir not in _BASES:
                from trl_lead.embedded import load_embedded_default

                _BASES[self.cache_dir] = load_embedded_default(cache_dir=self.cache_dir)
            self._base = _BASES[self.cache_dir]
        return self._base

    def _build_trainer(self, seed: int, output_dir: str) -> Any:
        import datasets
        import transformers

        bars = datasets.utils.logging, transformers.utils.logging  # no progress bars per reset; restored after
        shown = [module.is_progress_bar_enabled() for module in bars]
        for module in bars:
            module.disable_progress_bar()
        try:
            return self._make_trainer(seed, output_dir)
        finally:
            for module, was in zip(bars, shown):
                if was:
                    module.enable_progress_bar()

    def _make_trainer(self, seed: int, output_dir: str) -> Any:
        from transformers import AutoModelForCausalLM, PrinterCallback

        from trl_lead import LEADConfig, LEADSFTTrainer

        base = self._load_base()
        pool = base.train_dataset.select(range(self.pool_size))
        batches = math.ceil(self.round_size / self.batch_size)
        warmup_rounds = math.ceil(self.lead_kwargs["lead_warmup_steps"] / batches)
        args = LEADConfig(
            output_dir=output_dir,
            assistant_only_loss=True,
            per_device_train_batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            lr_scheduler_type="constant",
            max_steps=batches * (self.max_rounds + warmup_rounds),
            max_length=64,
            logging_steps=10**9,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            bf16=False,
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=seed,
            lead_seed=seed,
            lead_cluster_column="family_id",
            **self.lead_kwargs,
        )
        adapter = _BlockingPolicy(self.num_clusters, self.mixture, self._requests, self._actions)
        # Every episode starts from the same base model and pool, so the trainer's scoring pass (a forward pass over
        # the pool, the largest part of a reset) gives the same losses each time: computed once per process
        key = (self.cache_dir, self.pool_size, self.batch_size, args.max_length, args.lead_initial_score)

        class CachedScores(LEADSFTTrainer):
            def score_pool(self) -> np.ndarray:
                if key not in _INITIAL_SCORES:
                    _INITIAL_SCORES[key] = super().score_pool()
                return _INITIAL_SCORES[key].copy()

        trainer = CachedScores(
            model=AutoModelForCausalLM.from_pretrained(base.model_path),
            args=args,
            train_dataset=pool,
            processing_class=base.tokenizer,
            policy=adapter,
        )
        trainer.remove_callback(PrinterCallback)
        return trainer

    def _train(self, trainer: Any, requests: queue.Queue) -> None:
        from trl_lead.embedded import torch_threads

        try:
            with torch_threads(self.num_threads):
                trainer.train()
            requests.put(("done", None))
        except _Stop:
            requests.put(("stopped", None))
        except BaseException as error:  # handed to the env's thread, which raises it
            requests.put(("error", error))

    def _wait(self) -> str:
        """Wait until the trainer asks for the next action or stops; return which ("action" or "done")."""
        try:
            kind, payload = self._requests.get(timeout=self.step_timeout)
        except queue.Empty:
            raise TimeoutError(f"The trainer gave no sign of life in {self.step_timeout} s (step_timeout).") from None
        if kind == "error":
            self._finished = True
            raise RuntimeError(f"LEAD training failed in LiveTraining: {payload!r}") from payload
        if kind == "action":
            self._mask = payload
            return "action"
        self._finished = True
        self._mask = self.trainer.lead_selector.arm_mask().copy()
        return "done"

    def _stop_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            if self.trainer is not None:
                self.trainer.control.should_training_stop = True  # a round in flight ends after its step
            self._actions.put(_STOP)  # a trainer blocked in the policy raises _Stop
            self._thread.join(timeout=self.step_timeout)
        self._thread = None
        self._requests, self._actions = queue.Queue(), queue.Queue()
        self._finished = True

    # ------------------------------------------------------------------ held-out quality
    def _eval_rows(self) -> Any:
        """The first ``eval_size`` held-out rows of every family (the held-out set is stored family by family)."""
        evaluation = self._load_base().eval_dataset
        kept, seen = [], {}
        for index, family in enumerate(evaluation["family"]):
            seen[family] = seen.get(family, 0) + 1
            if seen[family] <= self.eval_size:
                kept.append(index)
        return evaluation.select(kept)

    def evaluate(self, model: Any = None) -> tuple[float, dict[str, Any]]:
        """``(quality, quality_detail)`` of ``model`` (default: the trainer's model), as described in the class doc.

        Call it only while the trainer waits for an action (between steps) or after the episode: the model must not
        change during the evaluation.
        """
        import torch

        from trl_lead.embedded import exact_match, torch_threads
        from trl_lead.pool import FAMILIES, NOISE_FAMILY
        from trl_lead.scoring import answer_losses

        base = self._load_base()
        model = self.trainer.model if model is None else model
        rows = self._eval_rows()
        with torch_threads(self.num_threads), torch.random.fork_rng(devices=[]):  # training's RNG stays untouched
            matches = exact_match(model, base.tokenizer, rows, num_threads=None)
            losses = answer_losses(model, base.tokenizer, rows, batch_size=64, show_progress=False, append_eos=True)
        families = np.asarray(rows["family"])
        learnable = families != NOISE_FAMILY
        detail = {
            "families": list(FAMILIES),
            "exact_match": [matches.get(f, math.nan) / 100.0 for f in FAMILIES],
            "loss": [float(losses[families == f].mean()) if (families == f).any() else math.nan for f in FAMILIES],
            "exact_match_learnable": matches["overall_learnable"] / 100.0,
            "loss_learnable": float(losses[learnable].mean()),
        }
        return detail["exact_match_learnable"], detail

    def _base_quality(self) -> tuple[float, dict[str, Any]]:
        """Quality of the warmed-up base model (what every episode starts from), evaluated once per process."""
        key = (self.cache_dir, self.eval_size)
        if key not in _BASE_QUALITY:
            from transformers import AutoModelForCausalLM

            _BASE_QUALITY[key] = self.evaluate(AutoModelForCausalLM.from_pretrained(self._load_base().model_path))
        quality, detail = _BASE_QUALITY[key]
        return quality, {**detail, "exact_match": list(detail["exact_match"]), "loss": list(detail["loss"])}

    # ------------------------------------------------------------------ observation
    def _observation(self) -> np.ndarray:
        return self._observation_of(self.trainer.lead_selector)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._stop_thread()
        trainer_seed = int(self.np_random.integers(2**31))
        if self.output_dir is None:
            if self._temp_dir is None:
                self._temp_dir = tempfile.mkdtemp(prefix="trl_lead_live_")
            root = self._temp_dir
        else:
            root = self.output_dir
        self._episodes += 1
        self.trainer = self._build_trainer(trainer_seed, f"{root}/episode-{self._episodes}")
        self._steps = 0
        self._finished = False
        self._thread = threading.Thread(
            target=self._train, args=(self.trainer, self._requests), name="LiveTraining", daemon=True
        )
        self._thread.start()
        self._wait()  # initial scores, warm-up rounds, then the trainer asks for the first round's action
        quality, detail = self._base_quality()
        info = {
            "expected_rewards": np.full(self.num_clusters, math.nan),
            "action_mask": self._mask.copy(),
            "quality": quality,
            "quality_detail": detail,
        }
        return self._observation(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.trainer is None:
            raise RuntimeError("Call reset() before step().")
        if self._finished:
            raise RuntimeError("The episode has ended (training finished); call reset().")
        action = self._checked_action(action, self._mask)
        rounds = self.trainer.lead_state.rounds
        before = len(rounds)
        self._actions.put(action)
        outcome = self._wait()
        if len(rounds) <= before:
            raise RuntimeError("The trainer stopped without finishing the round (no record was written).")
        record = rounds[before]
        self._steps += 1
        info = {
            "expected_rewards": np.full(self.num_clusters, math.nan),
            "regret": math.nan,
            "action_mask": self._mask.copy(),
            **self._record_info(record),
            "mean_idu": float(record["mean_idu"]),
            "step": int(record.get("step", -1)),
            "wall_time": float(record.get("wall_time", math.nan)),
        }
        terminated = not self._mask.any()
        truncated = not terminated and (outcome == "done" or self._steps >= self.max_rounds)
        info["quality"] = math.nan
        if terminated or truncated or (self.eval_every and self._steps % self.eval_every == 0):
            info["quality"], info["quality_detail"] = self.evaluate()
        return self._observation(), float(record["reward"]), terminated, truncated, info

    def close(self) -> None:
        self._stop_thread()
        self.trainer = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
        super().close()
