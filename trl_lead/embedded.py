"""The embedded default: an offline instruction pool, tokenizer and tiny Llama model (docs/design.md).

Nothing here touches the network. The pieces are:

- :func:`make_instruction_pool` (defined in :mod:`trl_lead.pool`, importable from here): a generated instruction pool
  of eight task families of different difficulty and size (string manipulation, arithmetic, sorting, a memorised
  lookup table, formatting, trivially easy items and one family of random, unlearnable answers), with
  near-duplicates, a share of wrong answers, and a held-out evaluation set per family.
- :func:`build_tokenizer`: a character-level tokenizer built with the ``tokenizers`` library, with special tokens and a
  chat template whose ``{% generation %}`` block covers the answer and the end-of-turn token, so TRL's
  ``assistant_only_loss=True`` trains exactly the answer and the stop token.
- :func:`build_tiny_model`: a Llama-style model of about 0.1-1M parameters built from a ``LlamaConfig``
  (0.35M with :data:`DEFAULT_MODEL_KWARGS`, the warmed-up base; 0.1M with the function's own defaults).
- :func:`warmed_up_base`: a short SFT run on random pool samples with TRL's ``SFTTrainer``, built once and cached on
  disk, because LEAD fine-tunes a model that already follows the answer format.
- :func:`exact_match`: greedy generation and per-family exact match on an evaluation set.
- :func:`load_embedded_default`: all of the above in one call, for the demo, tests and benchmarks.

Everything is deterministic given the seeds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .files import atomic_directory, cache_dir_path
from .pool import DEFAULT_NUM_EVAL_PER_FAMILY, DEFAULT_NUM_TRAIN, FAMILIES, NOISE_FAMILY, make_instruction_pool

logger = logging.getLogger(__name__)

#: Part of the warm-up cache key. The key also hashes the generated pool, the tokenizer and the SFT settings, so bump
#: this only for changes those do not show (model construction, the training code).
EMBEDDED_VERSION = 1

DEFAULT_WARMUP_STEPS = 500
DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_BATCH_SIZE = 16
#: Token length of the longest rendered pool sample is about 36; this leaves room.
DEFAULT_MAX_LENGTH = 64
DEFAULT_MODEL_KWARGS: dict[str, int] = {
    "hidden_size": 128,
    "num_layers": 2,
    "num_heads": 4,
    "intermediate_size": 256,
    "max_position_embeddings": 128,
}
#: ``SFTConfig`` settings that suit the embedded default on CPU (TRL's defaults are bf16 and activation
#: checkpointing). The warm-up uses them; pass them on, e.g. ``SFTConfig(output_dir=..., **EMBEDDED_SFT_KWARGS)``.
EMBEDDED_SFT_KWARGS: dict[str, Any] = {
    "per_device_train_batch_size": DEFAULT_BATCH_SIZE,
    "gradient_accumulation_steps": 1,
    "learning_rate": DEFAULT_LEARNING_RATE,
    "lr_scheduler_type": "constant",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "optim": "adamw_torch",
    "assistant_only_loss": True,
    "max_length": DEFAULT_MAX_LENGTH,
    "bf16": False,
    "activation_checkpointing": False,
    "use_cpu": True,
    "report_to": "none",
    "save_strategy": "no",
    "dataloader_num_workers": 0,
}
#: Torch intra-op threads used by the warm-up and by :func:`exact_match`. The tiny model gains nothing from more,
#: and on a busy 2-core machine two threads run ~10x slower than one (measured: 16 ms vs 90-250 ms per step).
DEFAULT_NUM_THREADS = 1

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<bos>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"
SYSTEM_TOKEN = "<|system|>"
SPECIAL_TOKENS: tuple[str, ...] = (
    PAD_TOKEN,
    BOS_TOKEN,
    EOS_TOKEN,
    UNK_TOKEN,
    USER_TOKEN,
    ASSISTANT_TOKEN,
    SYSTEM_TOKEN,
)
#: Printable ASCII plus newline: the fixed base alphabet of the character-level tokenizer.
BASE_ALPHABET: tuple[str, ...] = tuple(chr(i) for i in range(32, 127)) + ("\n",)

#: Chat template: ``<bos><|user|>question<|assistant|>answer<eos>``. The generation block holds the answer and the
#: end-of-turn ``<eos>``, so ``return_assistant_tokens_mask`` covers exactly the tokens the model must produce.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}" + SYSTEM_TOKEN + "{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}" + USER_TOKEN + "{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}" + ASSISTANT_TOKEN + "{% generation %}{{ message['content'] }}"
    "{{ eos_token }}{% endgeneration %}"
    "{% else %}{{ raise_exception('Unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT_TOKEN + "{% endif %}"
)


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(num_threads)``, restoring the previous count after.

    | Argument | Meaning |
    |---|---|
    | ``num_threads`` | intra-op threads for the block; ``None`` leaves the setting alone |
    """
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------------------------------------------------
# Tokenizer and model
# --------------------------------------------------------------------------------------------------------------------


def build_tokenizer(texts: Iterable[str] | None = None) -> PreTrainedTokenizerFast:
    """Build the character-level tokenizer of the embedded default, locally with the ``tokenizers`` library.

    The vocabulary is the special tokens (:data:`SPECIAL_TOKENS`), then printable ASCII and newline
    (:data:`BASE_ALPHABET`), then, sorted, any other character found in ``texts``. Every character is one token, so
    the tokenizer is fully deterministic and needs no training data. The chat template (:data:`CHAT_TEMPLATE`) renders
    ``<bos><|user|>question<|assistant|>answer<eos>`` and wraps ``answer<eos>`` in ``{% generation %}``, so TRL's
    ``assistant_only_loss=True`` trains the answer and the stop token, and ``add_generation_prompt=True`` ends the
    prompt with ``<|assistant|>``.

    | Argument | Meaning |
    |---|---|
    | ``texts`` | optional texts whose characters outside the base alphabet are added to the vocabulary |

    Returns:
        A ``PreTrainedTokenizerFast`` with ``pad_token``, ``bos_token``, ``eos_token`` and ``unk_token`` set. It does
        not add special tokens when encoding plain text; the chat template adds ``<bos>``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    alphabet = list(BASE_ALPHABET)
    if texts is not None:
        known = set(alphabet)
        alphabet += sorted({char for text in texts for char in text} - known)
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *alphabet])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        additional_special_tokens=[USER_TOKEN, ASSISTANT_TOKEN, SYSTEM_TOKEN],
        chat_template=CHAT_TEMPLATE,
        padding_side="right",
    )


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 128,
    max_position_embeddings: int = 128,
    seed: int = 0,
) -> LlamaForCausalLM:
    """Build a randomly initialised Llama-style causal LM sized for CPU training.

    The defaults give about 0.1M parameters. The weights depend only on ``seed`` (the global torch RNG is left as it
    was). ``pad_token_id``, ``bos_token_id`` and ``eos_token_id`` come from the tokenizer and are set in both the
    model config and its ``generation_config`` (greedy decoding).

    | Argument | Meaning |
    |---|---|
    | ``tokenizer`` | the tokenizer (its length is the vocabulary size) |
    | ``hidden_size`` | width of the residual stream |
    | ``num_layers`` | number of decoder layers |
    | ``num_heads`` | attention heads (``hidden_size`` must be divisible by it); no grouped-query attention |
    | ``intermediate_size`` | width of the MLP |
    | ``max_position_embeddings`` | longest sequence the rotary embedding is configured for |
    | ``seed`` | seed of the weight initialisation |
    """
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        use_cache=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=12,
    )
    return model


def build_tiny_moe_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> transformers.PreTrainedModel:
    """Build a randomly initialised Qwen3-MoE causal LM (one layer, 4 experts, 2 per token), a few thousand
    parameters, for mixture-of-experts checks on CPU. Its forward returns the router's aux loss, which TRL's
    ``SFTTrainer`` adds to the loss (``router_aux_loss_coef`` of it). The weights depend only on ``seed``."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        moe_intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        num_experts=4,
        num_experts_per_tok=2,
        output_router_logits=True,
        router_aux_loss_coef=0.01,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Qwen3MoeForCausalLM(config)


# --------------------------------------------------------------------------------------------------------------------
# Warm-up (cached)
# --------------------------------------------------------------------------------------------------------------------

_WARMUP_MARKER = "warmup.json"


def warmup_settings(
    steps: int = DEFAULT_WARMUP_STEPS,
    seed: int = 0,
    pool_seed: int | None = None,
    num_train: int = DEFAULT_NUM_TRAIN,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    lr_scheduler_type: str = "constant",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int = DEFAULT_MAX_LENGTH,
    model_kwargs: dict[str, int] | None = None,
    mixture: str | None = None,
) -> dict[str, Any]:
    """The settings that define a warmed-up base model (and its cache key); see :func:`warmed_up_base`.

    Besides the arguments and :data:`EMBEDDED_VERSION`, they hold digests of the generated pool and of the tokenizer,
    and the ``SFTConfig`` settings, so a change to the generator, the template or the recipe never reuses a stale
    cache entry even if the version constant was not bumped.
    """
    pool_seed = seed if pool_seed is None else pool_seed
    # exactly the pool the warm-up trains on
    train, _ = make_instruction_pool(num_train=num_train, seed=pool_seed, mixture=mixture)
    tokenizer = build_tokenizer()
    # the key is unchanged for the embedded default pool, so its cached warm-ups stay valid
    pool = {} if mixture is None else {"mixture": mixture}
    return {
        **pool,
        "embedded_version": EMBEDDED_VERSION,
        "steps": steps,
        "seed": seed,
        "pool_seed": pool_seed,
        "num_train": num_train,
        "learning_rate": learning_rate,
        "lr_scheduler_type": lr_scheduler_type,
        "batch_size": batch_size,
        "max_length": max_length,
        "model_kwargs": {**DEFAULT_MODEL_KWARGS, **(model_kwargs or {})},
        "sft_kwargs": EMBEDDED_SFT_KWARGS,
        "pool_digest": _digest(train.to_list()),
        "tokenizer_digest": _digest([sorted(tokenizer.get_vocab().items()), tokenizer.chat_template]),
    }


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _fingerprint(settings: dict[str, Any]) -> str:
    return _digest(settings)


@contextmanager
def _preserved_rng_state() -> Iterator[None]:
    """Restore the global ``random``, ``numpy`` and torch CPU RNG states after the block."""
    import numpy as np

    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)


@contextmanager
def quiet(enabled: bool) -> Iterator[None]:
    """Hide the ``datasets`` and ``transformers`` progress bars inside the block (restored after)."""
    if not enabled:
        yield
        return
    ds_logging, tf_logging = datasets.utils.logging, transformers.utils.logging
    ds_was, tf_was = ds_logging.is_progress_bar_enabled(), tf_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if ds_was:
            ds_logging.enable_progress_bar()
        if tf_was:
            tf_logging.enable_progress_bar()


def _train_warmup(settings: dict[str, Any], save_dir: Path, verbose: bool) -> dict[str, Any]:
    """Build pool, tokenizer and model, train them as ``settings`` say, save into ``save_dir``; return run stats."""
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    start = time.perf_counter()
    train, _ = make_instruction_pool(
        num_train=settings["num_train"], seed=settings["pool_seed"], mixture=settings.get("mixture")
    )
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, seed=settings["seed"], **settings["model_kwargs"])
    train = train.select_columns(["messages"])
    with tempfile.TemporaryDirectory(prefix="trl_lead_warmup_") as output_dir, quiet(not verbose):
        args = SFTConfig(
            output_dir=output_dir,
            **{
                **EMBEDDED_SFT_KWARGS,
                "max_steps": settings["steps"],
                "per_device_train_batch_size": settings["batch_size"],
                "learning_rate": settings["learning_rate"],
                "lr_scheduler_type": settings["lr_scheduler_type"],
                "max_length": settings["max_length"],
                "logging_steps": max(1, settings["steps"] // 10),
                "disable_tqdm": not verbose,
                "seed": settings["seed"],
                "data_seed": settings["seed"],
            },
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
        if not verbose:
            trainer.remove_callback(PrinterCallback)
        result = trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        model.save_pretrained(save_dir)
        tokenizer.save_pretrained(save_dir)
    return {
        "train_loss": result.training_loss,
        "logged_losses": losses,
        "wall_time_s": time.perf_counter() - start,
        "num_parameters": model.num_parameters(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": version("trl"),
    }


def warmed_up_base(
    cache_dir: str | os.PathLike[str] | None = None,
    steps: int = DEFAULT_WARMUP_STEPS,
    seed: int = 0,
    *,
    pool_seed: int | None = None,
    num_train: int = DEFAULT_NUM_TRAIN,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    lr_scheduler_type: str = "constant",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int = DEFAULT_MAX_LENGTH,
    model_kwargs: dict[str, int] | None = None,
    mixture: str | None = None,
    num_threads: int | None = DEFAULT_NUM_THREADS,
    verbose: bool = False,
) -> str:
    """Return the path of a warmed-up base model (and its tokenizer), training and caching it on first use.

    LEAD fine-tunes a model that already follows the answer format. This builds the pool
    (:func:`make_instruction_pool`), the tokenizer and the tiny model, and trains the model for ``steps`` optimizer
    steps with TRL's ``SFTTrainer`` (``assistant_only_loss=True``, CPU, AdamW, no weight decay) on the training pool in
    random order. Model and tokenizer are saved with ``save_pretrained`` into
    ``<cache_dir>/warmup-<fingerprint>``, where the fingerprint hashes :func:`warmup_settings` (the arguments,
    :data:`EMBEDDED_VERSION`, and digests of the pool and the tokenizer). The directory is written under a temporary
    name and renamed into place only once complete, with ``warmup.json`` (settings and run stats) written last, so an
    interrupted build never counts as a cache hit. A later call with the same settings returns the path without
    training. Load it with ``AutoModelForCausalLM.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)``.

    With the defaults (0.35M parameters, 500 steps at a constant 1e-3, batch 16) the build takes about 20-40 s on two
    busy CPU cores. The result answers in the right format and gets some families partly right (held-out exact match,
    seeds 0-2: overall 7-12%, ``easy`` 8-58%, ``sort`` 4-36%, ``lookup`` 10-16%), with clear room left: 300 more steps
    of random SFT reach 18-27% overall; ``copy``/``format`` stay below 10% and ``noise`` at 0.

    | Argument | Meaning |
    |---|---|
    | ``cache_dir`` | where to cache; default ``$TRL_LEAD_CACHE`` or ``~/.cache/trl_lead`` |
    | ``steps`` | optimizer steps of the warm-up |
    | ``seed`` | seed of the weight initialisation and of the training order |
    | ``pool_seed`` | seed of the instruction pool (default: ``seed``) |
    | ``num_train`` | size of the instruction pool |
    | ``learning_rate`` | peak learning rate |
    | ``lr_scheduler_type`` | a ``transformers`` scheduler name, e.g. ``"constant"`` or ``"cosine"`` |
    | ``batch_size`` | samples per optimizer step |
    | ``max_length`` | longest tokenized sample (the pool's are shorter) |
    | ``model_kwargs`` | overrides of :data:`DEFAULT_MODEL_KWARGS` passed to :func:`build_tiny_model` |
    | ``mixture`` | warm up on this noisy pool (a name in :data:`trl_lead.pool.MIXTURES`) instead of the default |
    | ``num_threads`` | torch threads while training (restored after; ``None``: leave as is); not part of the key |
    | ``verbose`` | show the Trainer's loss logs and the progress bars while building |

    The global ``random``, ``numpy`` and ``torch`` RNG states (which the Trainer reseeds) are restored afterwards.
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be at least 1")
    settings = warmup_settings(
        steps=steps,
        seed=seed,
        pool_seed=pool_seed,
        num_train=num_train,
        learning_rate=learning_rate,
        lr_scheduler_type=lr_scheduler_type,
        batch_size=batch_size,
        max_length=max_length,
        model_kwargs=model_kwargs,
        mixture=mixture,
    )
    final = cache_dir_path(cache_dir) / f"warmup-{_fingerprint(settings)}"
    if (final / _WARMUP_MARKER).is_file():
        return str(final)
    if final.exists():
        shutil.rmtree(final)  # a directory without the marker is not a valid cache entry
    # keep_existing: another process may finish the same build first; its entry is the same and may be in use
    with atomic_directory(final, keep_existing=True) as tmp:
        with torch_threads(num_threads), _preserved_rng_state():
            stats = _train_warmup(settings, tmp, verbose)
        (tmp / _WARMUP_MARKER).write_text(json.dumps({"settings": settings, **stats}, indent=2))
    logger.info("warmed-up base model built in %.1f s: %s", stats["wall_time_s"], final)
    return str(final)


# --------------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------------


def extract_answer(generated_ids: Sequence[int], tokenizer: PreTrainedTokenizerFast) -> str:
    """Decode a generated continuation up to (not including) the first ``eos`` or ``pad`` token, stripped.

    Other special tokens are kept in the text, so a malformed answer that contains one never matches.

    | Argument | Meaning |
    |---|---|
    | ``generated_ids`` | the new token ids only (no prompt) |
    | ``tokenizer`` | the tokenizer that decodes them |
    """
    stop = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    ids = list(generated_ids)
    for index, token_id in enumerate(ids):
        if token_id in stop:
            ids = ids[:index]
            break
    return tokenizer.decode(ids, skip_special_tokens=False).strip()


@torch.no_grad()
def generate_answers(
    model: transformers.PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    prompts: Sequence[Sequence[dict[str, str]]],
    batch_size: int = 64,
    max_new_tokens: int = 12,
    num_threads: int | None = DEFAULT_NUM_THREADS,
) -> list[str]:
    """Greedy answers to chat prompts (lists of messages ending with a user turn), batched with left padding.

    | Argument | Meaning |
    |---|---|
    | ``model`` | a causal LM |
    | ``tokenizer`` | its tokenizer, with a chat template |
    | ``prompts`` | the conversations to answer |
    | ``batch_size`` | prompts per ``generate`` call |
    | ``max_new_tokens`` | longest generated answer, in tokens |
    | ``num_threads`` | torch threads while generating (restored after; ``None``: leave as is) |
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded = [
        list(
            tokenizer.apply_chat_template(list(p), add_generation_prompt=True, tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )
        for p in prompts
    ]
    answers: list[str] = []
    try:
        with torch_threads(num_threads):
            for start in range(0, len(encoded), batch_size):
                batch = encoded[start : start + batch_size]
                width = max(len(ids) for ids in batch)
                input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(ids)) + ids for ids in batch])
                attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
                output = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
                answers.extend(extract_answer(row[width:].tolist(), tokenizer) for row in output)
    finally:
        model.train(was_training)
    return answers


def exact_match(
    model: transformers.PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    eval_dataset: datasets.Dataset,
    batch_size: int = 64,
    max_new_tokens: int = 12,
    num_threads: int | None = DEFAULT_NUM_THREADS,
) -> dict[str, float]:
    """Held-out exact match, in percent, per family and overall.

    Each row's prompt is its messages up to the last assistant turn, rendered with ``add_generation_prompt=True``; the
    model answers greedily (:func:`generate_answers`), the answer is decoded up to ``eos`` and stripped
    (:func:`extract_answer`) and compared with the reference answer, stripped.

    | Argument | Meaning |
    |---|---|
    | ``model`` | a causal LM |
    | ``tokenizer`` | its tokenizer, with a chat template |
    | ``eval_dataset`` | rows with ``messages`` ending in the reference assistant turn, and a ``family`` column |
    | ``batch_size`` | prompts per ``generate`` call |
    | ``max_new_tokens`` | longest generated answer, in tokens |
    | ``num_threads`` | torch threads while generating (restored after; ``None``: leave as is) |

    Returns:
        ``{family: percent}`` for every family present, plus ``"overall"`` (mean over all rows) and
        ``"overall_learnable"`` (mean over the rows not in the ``noise`` family).
    """
    prompts, references, families = [], [], []
    for row in eval_dataset:
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append(messages[:last])
        references.append(messages[last]["content"].strip())
        families.append(row["family"])
    answers = generate_answers(
        model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens, num_threads=num_threads
    )
    hits: dict[str, list[bool]] = {}
    for family, answer, reference in zip(families, answers, references):
        hits.setdefault(family, []).append(answer == reference)
    ordered = sorted(hits.items(), key=lambda kv: _family_order(kv[0]))
    scores = {family: 100.0 * sum(h) / len(h) for family, h in ordered}
    everything = [h for hs in hits.values() for h in hs]
    learnable = [h for family, hs in hits.items() if family != NOISE_FAMILY for h in hs]
    scores["overall"] = 100.0 * sum(everything) / max(1, len(everything))
    scores["overall_learnable"] = 100.0 * sum(learnable) / max(1, len(learnable))
    return scores


def _family_order(family: str) -> tuple[int, str]:
    return (FAMILIES.index(family) if family in FAMILIES else len(FAMILIES), family)


# --------------------------------------------------------------------------------------------------------------------
# Everything in one call
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class EmbeddedDefault:
    """The warmed-up model, its tokenizer and the pool it was warmed up on (see :func:`load_embedded_default`)."""

    model: LlamaForCausalLM
    tokenizer: PreTrainedTokenizerFast
    train_dataset: datasets.Dataset
    eval_dataset: datasets.Dataset
    model_path: str


def load_embedded_default(
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    warmup_steps: int = DEFAULT_WARMUP_STEPS,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_eval_per_family: int = DEFAULT_NUM_EVAL_PER_FAMILY,
    mixture: str | None = None,
) -> EmbeddedDefault:
    """Load (building and caching it if needed) the warmed-up model, its tokenizer and the matching pool.

    | Argument | Meaning |
    |---|---|
    | ``cache_dir`` | warm-up cache, as in :func:`warmed_up_base` |
    | ``seed`` | seed of the pool, the model initialisation and the warm-up |
    | ``warmup_steps`` | optimizer steps of the warm-up |
    | ``num_train`` | size of the training pool |
    | ``num_eval_per_family`` | held-out rows per family |
    | ``mixture`` | a name in :data:`trl_lead.pool.MIXTURES`: the model is warmed up on that pool, which is returned |
    """
    path = warmed_up_base(cache_dir, steps=warmup_steps, seed=seed, num_train=num_train, mixture=mixture)
    train, evaluation = make_instruction_pool(
        num_train=num_train, num_eval_per_family=num_eval_per_family, seed=seed, mixture=mixture
    )
    model = LlamaForCausalLM.from_pretrained(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    return EmbeddedDefault(model, tokenizer, train, evaluation, path)
