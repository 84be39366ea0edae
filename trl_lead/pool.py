"""The embedded default's instruction pool: eight generated task families, offline and deterministic.

:func:`make_instruction_pool` generates the training pool and a held-out evaluation set: string manipulation,
arithmetic, sorting, a memorised lookup table, formatting, trivially easy items and one family of random, unlearnable
answers (:data:`FAMILIES`, :data:`FAMILY_DESCRIPTIONS`), of different sizes (:data:`FAMILY_WEIGHTS`), with
near-duplicates and a share of wrong answers. :mod:`trl_lead.embedded` builds the tokenizer and the tiny model that
learn it. Only ``datasets`` and the standard library are used.
"""

from __future__ import annotations

import functools
import math
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import datasets

#: Task families, in ``family_id`` order.
FAMILIES: tuple[str, ...] = ("easy", "copy", "format", "reverse", "sort", "add", "lookup", "noise")
#: The family whose answers are random (unlearnable).
NOISE_FAMILY = "noise"
#: The pool column to use as LEAD's cluster column (``lead_cluster_column``): the task family.
CLUSTER_COLUMN = "family_id"
#: Relative size of each family in the training pool (the largest is 2.7x the smallest).
FAMILY_WEIGHTS: dict[str, float] = {
    "easy": 1.0,
    "copy": 1.0,
    "format": 0.75,
    "reverse": 1.0,
    "sort": 1.0,
    "add": 2.0,
    "lookup": 2.0,
    "noise": 1.5,
}
#: One-line description of each family.
FAMILY_DESCRIPTIONS: dict[str, str] = {
    "easy": "last letter of 3-5 letters ('last: kxtp' -> 'p'); trivially easy",
    "copy": "copy 2-4 letters ('copy: abc' -> 'abc')",
    "format": "uppercase 2-4 letters ('upper: abc' -> 'ABC')",
    "reverse": "reverse 2-4 letters ('reverse: abc' -> 'cba')",
    "sort": "sort 3-4 digits ('sort: 4132' -> '1234')",
    "add": "a 2-digit number plus a 1-digit number ('add: 47+5' -> '52')",
    "lookup": "40 made-up capitals, each asked in 4 phrasings ('capital of Buvar?' -> 'feso'); memorisation",
    "noise": "random answers ('hash: abcd' -> 3-5 random letters); each instruction appears twice, with two answers",
}

DEFAULT_NUM_TRAIN = 2000
DEFAULT_NUM_EVAL_PER_FAMILY = 50
DEFAULT_CORRUPT_RATE = 0.05
DEFAULT_NEAR_DUPLICATE_RATE = 0.1

#: Family name and ``family_id`` of a mixture's bad source (see :class:`Mixture`): the id after the families' own.
BAD_SOURCE = "bad_source"
BAD_SOURCE_ID = len(FAMILIES)
#: How a mixture's wrong answers are made (see :class:`Mixture`)
WRONG_ANSWER_KINDS: tuple[str, ...] = ("other_prompt", "near_miss")
#: Held-out items per family that the benchmarks use with the :data:`MIXTURES` (``lookup`` holds out at most 120).
MIXTURE_NUM_EVAL_PER_FAMILY = 200


@dataclass(frozen=True)
class Mixture:
    """A pool whose noise conflicts with its tasks: wrong answers to the tasks' own prompts, and a bad source.

    A selector can only gain where the noise costs the model something. Random answers to prompts of their own (the
    ``noise`` family) cost little beyond the steps they take; wrong answers to a task's own prompts pull the model
    away from the right answer (docs/results.md). :func:`make_instruction_pool` with ``mixture=`` builds such a pool.

    | Field | Meaning |
    |---|---|
    | ``family_weights`` | relative size of each family present (names from :data:`FAMILIES`; ``noise`` optional) |
    | ``wrong_answer_rate`` | share of each learnable family's rows given another prompt's (wrong) answer |
    | ``bad_source_families`` | the families whose prompts the bad source repeats (learnable ones only) |
    | ``bad_source_weight`` | relative size of the bad source, on the scale of ``family_weights`` (0: none) |
    | ``wrong_answer_kind`` | ``"other_prompt"``: another prompt's answer (far from the right one); |
    |  | ``"near_miss"``: the right answer slightly off, in the task's format (:func:`near_miss`); both sources |
    | ``pool_warmup_steps`` | > 0: the benchmarks' base model is warmed up for this many steps on this noisy pool |
    |  | itself, as a user's base would have seen its data; 0: on the embedded default pool |
    """

    family_weights: dict[str, float]
    wrong_answer_rate: float
    bad_source_families: tuple[str, ...] = ()
    bad_source_weight: float = 0.0
    wrong_answer_kind: str = "other_prompt"
    pool_warmup_steps: int = 0

    def __post_init__(self):
        unknown = [f for f in self.family_weights if f not in FAMILIES]
        if unknown:
            raise ValueError(f"Mixture.family_weights: unknown families {unknown}; choose from {FAMILIES}")
        if not self.family_weights or any(not w > 0 for w in self.family_weights.values()):
            raise ValueError("Mixture.family_weights must name at least one family, each with a weight > 0")
        if not 0.0 <= self.wrong_answer_rate < 1.0:
            raise ValueError(f"Mixture.wrong_answer_rate={self.wrong_answer_rate} must be in [0, 1)")
        if self.wrong_answer_kind not in WRONG_ANSWER_KINDS:
            raise ValueError(
                f"Mixture.wrong_answer_kind={self.wrong_answer_kind!r}; choose one of {WRONG_ANSWER_KINDS}"
            )
        if self.pool_warmup_steps < 0:
            raise ValueError(f"Mixture.pool_warmup_steps={self.pool_warmup_steps} must be >= 0")
        if self.bad_source_weight < 0:
            raise ValueError(f"Mixture.bad_source_weight={self.bad_source_weight} must be >= 0")
        bad = self.bad_source_families
        if self.bad_source_weight > 0 and not bad:
            raise ValueError("Mixture.bad_source_families must name a family when bad_source_weight > 0")
        if any(f not in self.family_weights or f == NOISE_FAMILY for f in bad):
            raise ValueError(
                f"Mixture.bad_source_families={bad} must be learnable families of the mixture "
                f"({[f for f in self.family_weights if f != NOISE_FAMILY]})"
            )

    def weights(self) -> dict[str, float]:
        """The families' and the bad source's relative sizes, in :data:`FAMILIES` order, the bad source last."""
        weights = {f: self.family_weights[f] for f in FAMILIES if f in self.family_weights}
        if self.bad_source_weight > 0:
            weights[BAD_SOURCE] = self.bad_source_weight
        return weights


#: Named pools with headroom for a selector (docs/results.md: mixtures (a), (c), (d); (b) is (a), clusters computed).
MIXTURES: dict[str, Mixture] = {
    # (a) the default families and sizes; wrong answers to 30% of every task's rows; a bad source repeating the
    # prompts of five tasks with wrong answers, 20% of the pool
    "conflict-a": Mixture(
        family_weights=dict(FAMILY_WEIGHTS),
        wrong_answer_rate=0.3,
        bad_source_families=("copy", "format", "reverse", "sort", "add"),
        bad_source_weight=2.5,
    ),
    # (c) other sizes, a larger unlearnable share (the noise family and a bad source), wrong answers at another rate
    "conflict-c": Mixture(
        family_weights={
            "easy": 0.5,
            "copy": 2.0,
            "format": 1.0,
            "reverse": 2.0,
            "sort": 1.5,
            "add": 1.0,
            "lookup": 1.0,
            "noise": 2.0,
        },
        wrong_answer_rate=0.2,
        bad_source_families=("reverse", "sort", "add", "lookup"),
        bad_source_weight=3.0,
    ),
    # (d) where the base model's loss cannot tell right from wrong: four tasks whose wrong answers (30%) are near
    # misses in the task's own format, a bad source of one task's prompts with near-miss answers, no noise family,
    # and a base warmed up on this noisy pool itself
    "near-miss-d": Mixture(
        family_weights={"format": 1.0, "reverse": 1.0, "sort": 1.0, "add": 1.5},
        wrong_answer_rate=0.3,
        bad_source_families=("reverse",),
        bad_source_weight=1.0,
        wrong_answer_kind="near_miss",
        pool_warmup_steps=150,  # brief: the base's loss separates right from wrong in one task only
    ),
}

_LOOKUP_TABLE_SEED = 2505
_LOOKUP_NUM_FACTS = 40
_LOOKUP_PHRASINGS: tuple[str, ...] = ("capital of {}?", "{} capital?", "{}'s capital?", "the capital of {}")
_NEAR_DUPLICATE_EDITS: tuple[str, ...] = ("capitalize", "exclaim", "question", "double_space")
_LETTERS = string.ascii_lowercase
#: Length range of the letter or digit string of each family (inclusive).
_PAYLOAD_LENGTHS: dict[str, tuple[int, int]] = {
    "easy": (3, 5),
    "copy": (2, 4),
    "format": (2, 4),
    "reverse": (2, 4),
    "sort": (3, 4),
    "noise": (3, 5),
}
#: Ranges of the two operands of the ``add`` family (inclusive).
_ADD_RANGES: tuple[tuple[int, int], tuple[int, int]] = ((10, 99), (1, 9))


def _make_lookup_table() -> list[tuple[str, str]]:
    """The fixed table of made-up facts ``(country, code word)``, identical for every pool seed."""
    rng = random.Random(_LOOKUP_TABLE_SEED)
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    names: list[str] = []
    while len(names) < _LOOKUP_NUM_FACTS:
        syllables = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.choice((2, 3))))
        name = (syllables + rng.choice(("", "n", "r", "s"))).capitalize()[:7]
        if name not in names:
            names.append(name)
    words: list[str] = []
    while len(words) < _LOOKUP_NUM_FACTS:
        word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(2))
        if word not in words:
            words.append(word)
    return list(zip(names, words))


LOOKUP_TABLE: tuple[tuple[str, str], ...] = tuple(_make_lookup_table())


def _letters(rng: random.Random, lengths: tuple[int, int]) -> str:
    return "".join(rng.choice(_LETTERS) for _ in range(rng.randint(*lengths)))


def _sample_key(family: str, rng: random.Random) -> tuple[Any, ...]:
    """Draw the canonical payload of one item; two items with the same key are the same item."""
    if family in ("easy", "copy", "format", "reverse", "noise"):
        return (_letters(rng, _PAYLOAD_LENGTHS[family]),)
    if family == "sort":
        return ("".join(rng.choice(string.digits) for _ in range(rng.randint(*_PAYLOAD_LENGTHS[family]))),)
    if family == "add":
        return (rng.randint(*_ADD_RANGES[0]), rng.randint(*_ADD_RANGES[1]))
    if family == "lookup":
        return (rng.randrange(len(LOOKUP_TABLE)), rng.randrange(len(_LOOKUP_PHRASINGS)))
    raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")


def _render(family: str, key: tuple[Any, ...], rng: random.Random) -> tuple[str, str]:
    """Instruction and answer of an item. ``rng`` is used only by the noise family (its random answer)."""
    if family == "easy":
        return f"last: {key[0]}", key[0][-1]
    if family == "copy":
        return f"copy: {key[0]}", key[0]
    if family == "format":
        return f"upper: {key[0]}", key[0].upper()
    if family == "reverse":
        return f"reverse: {key[0]}", key[0][::-1]
    if family == "sort":
        return f"sort: {key[0]}", "".join(sorted(key[0]))
    if family == "add":
        return f"add: {key[0]}+{key[1]}", str(key[0] + key[1])
    if family == "lookup":
        country, word = LOOKUP_TABLE[key[0]]
        return _LOOKUP_PHRASINGS[key[1]].format(country), word
    if family == "noise":
        return f"hash: {key[0]}", _letters(rng, _PAYLOAD_LENGTHS[family])
    raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")


def _near_duplicate(instruction: str, rng: random.Random) -> str:
    """The same instruction with a small surface change that does not change its answer."""
    edit = rng.choice(_NEAR_DUPLICATE_EDITS)
    if edit == "capitalize" and instruction[0].islower():
        return instruction[0].upper() + instruction[1:]
    if edit == "double_space" and " " in instruction:
        return instruction.replace(" ", "  ", 1)
    if edit == "question" and not instruction.endswith("?"):
        return instruction + "?"
    return instruction + "!"


def _corrupt(answer: str, rng: random.Random) -> str:
    """A plausible wrong answer: one character replaced by another of the same kind."""
    position = rng.randrange(len(answer))
    char = answer[position]
    if char.isdigit():
        pool = string.digits
    elif char.isupper():
        pool = string.ascii_uppercase
    else:
        pool = _LETTERS
    replacement = rng.choice([c for c in pool if c != char])
    return answer[:position] + replacement + answer[position + 1 :]


def _family_sizes(num_train: int, weights: dict[str, float] | None = None) -> dict[str, int]:
    """Split ``num_train`` in proportion to ``weights`` (default :data:`FAMILY_WEIGHTS`; largest remainder, ties to
    the earlier name)."""
    weights = FAMILY_WEIGHTS if weights is None else weights
    names = list(weights)
    total = sum(weights.values())
    exact = {f: num_train * weights[f] / total for f in names}
    sizes = {f: math.floor(v) for f, v in exact.items()}
    by_remainder = sorted(names, key=lambda f: (sizes[f] - exact[f], names.index(f)))
    for f in by_remainder[: num_train - sum(sizes.values())]:
        sizes[f] += 1
    return sizes


def _eval_keys(family: str, n: int, rng: random.Random) -> list[tuple[Any, ...]]:
    """``n`` distinct held-out keys of a family."""
    if family == "lookup":
        # Each held-out (fact, phrasing) leaves at least one other phrasing of the same fact for training, so the
        # family tests memorisation of the fact, not of the exact string.
        per_fact = [rng.sample(range(len(_LOOKUP_PHRASINGS)), len(_LOOKUP_PHRASINGS)) for _ in LOOKUP_TABLE]
        order = rng.sample(range(len(LOOKUP_TABLE)), len(LOOKUP_TABLE))
        keys = [(fact, per_fact[fact][r]) for r in range(len(_LOOKUP_PHRASINGS) - 1) for fact in order]
        if n > len(keys):
            raise ValueError(f"num_eval_per_family={n} is more than the lookup family can hold out ({len(keys)})")
        return keys[:n]
    keys: list[tuple[Any, ...]] = []
    seen: set[tuple[Any, ...]] = set()
    for _ in range(1000 * (n + 1)):
        if len(keys) == n:
            return keys
        key = _sample_key(family, rng)
        if key not in seen:
            seen.add(key)
            keys.append(key)
    raise ValueError(f"could not draw {n} distinct evaluation items for family {family!r}")


def _row(family: str, instruction: str, answer: str, corrupted: bool, near_duplicate: bool) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": instruction}, {"role": "assistant", "content": answer}],
        "family": family,
        "family_id": BAD_SOURCE_ID if family == BAD_SOURCE else FAMILIES.index(family),
        "is_corrupted": corrupted,
        "is_near_duplicate": near_duplicate,
    }


def _wrong_answer(family: str, key: tuple[Any, ...], rng: random.Random) -> str:
    """The answer of another prompt of ``family``: the task's format, never the right answer to ``key``."""
    right = _render(family, key, rng)[1]
    while True:
        answer = _render(family, _sample_key(family, rng), rng)[1]
        if answer != right:
            return answer


def near_miss(family: str, right: str, rng: random.Random) -> str:
    """A wrong answer close to ``right`` in the task's own format: a sum off by 1, 2 or 10, a sorted string with two
    adjacent different digits swapped, otherwise one character replaced by another of the same kind."""
    if family == "add":
        return str(int(right) + rng.choice([d for d in (-10, -2, -1, 1, 2, 10) if int(right) + d >= 0]))
    if family == "sort":
        swaps = [i for i in range(len(right) - 1) if right[i] != right[i + 1]]
        if swaps:
            i = rng.choice(swaps)
            return right[:i] + right[i + 1] + right[i] + right[i + 2 :]
    return _corrupt(right, rng)


def _mixture_wrong_answer(spec: Mixture, family: str, key: tuple[Any, ...], rng: random.Random) -> str:
    if spec.wrong_answer_kind == "near_miss":
        return near_miss(family, _render(family, key, rng)[1], rng)
    return _wrong_answer(family, key, rng)


def _resolve_mixture(mixture: str | Mixture | None) -> Mixture | None:
    if mixture is None or isinstance(mixture, Mixture):
        return mixture
    if mixture not in MIXTURES:
        raise ValueError(f"mixture={mixture!r} is not a preset; choose one of {sorted(MIXTURES)} or pass a Mixture")
    return MIXTURES[mixture]


def make_instruction_pool(
    num_train: int = DEFAULT_NUM_TRAIN,
    num_eval_per_family: int = DEFAULT_NUM_EVAL_PER_FAMILY,
    seed: int = 0,
    corrupt_rate: float = DEFAULT_CORRUPT_RATE,
    near_duplicate_rate: float = DEFAULT_NEAR_DUPLICATE_RATE,
    mixture: str | Mixture | None = None,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Generate the embedded instruction pool and its held-out evaluation set.

    Eight task families (:data:`FAMILIES`, described in :data:`FAMILY_DESCRIPTIONS`) of different difficulty and size
    (:data:`FAMILY_WEIGHTS`). Instructions are at most 24 characters and answers at most 8. In every family but
    ``noise``, a share ``near_duplicate_rate`` of the rows are near-duplicates (an earlier row of the same family
    with a small surface change of the instruction and the same answer), and exactly ``round(corrupt_rate * size)``
    rows have a wrong answer (one character changed). The ``noise`` family has random answers, and every instruction
    in it appears twice with two independent answers, so its answers are not a function of the instruction.

    With ``mixture`` (a :class:`Mixture` or the name of one in :data:`MIXTURES`) the families and their sizes are the
    mixture's, and the noise conflicts with the tasks: in every family but ``noise``, exactly
    ``round(wrong_answer_rate * size)`` further rows (never one already corrupted) get a wrong answer of the
    mixture's ``wrong_answer_kind`` (another prompt's answer, or a near miss), and a bad source (family
    :data:`BAD_SOURCE`, ``family_id`` :data:`BAD_SOURCE_ID`) repeats
    prompts of the training rows of ``bad_source_families`` (in turn) with such wrong answers. For ``lookup`` at most
    120 items are held out. Without ``mixture`` the pool is exactly the one this function always generated.

    The evaluation set holds ``num_eval_per_family`` distinct items per family with correct answers (random ones for
    ``noise``, where exact match stays near 0). No evaluation item appears in the training pool, not even as a
    near-duplicate; for ``lookup`` the held-out items are (fact, phrasing) pairs whose fact is asked in another
    phrasing in training.

    | Argument | Meaning |
    |---|---|
    | ``num_train`` | number of training rows (split over the families by :data:`FAMILY_WEIGHTS` or the mixture) |
    | ``num_eval_per_family`` | held-out rows per family (at most 120 for ``lookup``; capped there with a mixture) |
    | ``seed`` | seed of the generator; the same seed gives the same datasets |
    | ``corrupt_rate`` | share of wrong answers (one character changed) in every family but ``noise`` |
    | ``near_duplicate_rate`` | share of near-duplicate rows in every family but ``noise`` |
    | ``mixture`` | ``None`` (the embedded default), a :class:`Mixture` or a name in :data:`MIXTURES` |

    Returns:
        ``(train, eval)`` datasets with columns ``messages`` (a user and an assistant turn), ``family`` (str),
        ``family_id`` (int, the family's index in :data:`FAMILIES`; usable as LEAD's cluster column),
        ``is_corrupted`` (bool: a wrong or random answer; True on every ``noise`` and bad-source row, so a row is
        clean, as an oracle selector would keep it, exactly when it is False) and ``is_near_duplicate`` (bool). The
        training rows are shuffled; the evaluation rows are grouped by family.
    """
    spec = _resolve_mixture(mixture)
    weights = FAMILY_WEIGHTS if spec is None else spec.weights()
    _check_pool_arguments(num_train, num_eval_per_family, corrupt_rate, near_duplicate_rate, spec, len(weights))
    train_rows: list[dict[str, Any]] = []
    eval_rows: list[dict[str, Any]] = []
    sizes = _family_sizes(num_train, weights)
    # Prompts (instruction, key) of each family's training rows that are not near-duplicates: the bad source's
    prompts: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
    for family_id, family in enumerate(FAMILIES):
        if family not in sizes:
            continue
        # One generator per family and purpose, so a family's items do not depend on the other families' sizes.
        eval_rng = random.Random(f"{seed}-eval-{family_id}")
        train_rng = random.Random(f"{seed}-train-{family_id}")
        num_eval = num_eval_per_family
        if spec is not None and family == "lookup":
            num_eval = min(num_eval, len(LOOKUP_TABLE) * (len(_LOOKUP_PHRASINGS) - 1))
        held_out = _eval_keys(family, num_eval, eval_rng)
        for key in held_out:
            instruction, answer = _render(family, key, eval_rng)
            eval_rows.append(_row(family, instruction, answer, family == NOISE_FAMILY, False))
        draw = functools.partial(_draw_key, family, set(held_out), train_rng)
        if family == NOISE_FAMILY:
            train_rows += _noise_rows(family, sizes[family], draw, train_rng)
            continue
        rows, keys = _task_rows(family, sizes[family], draw, train_rng, near_duplicate_rate, corrupt_rate)
        originals = [(row, key) for row, key in zip(rows, keys) if not row["is_near_duplicate"]]
        prompts[family] = [(row["messages"][0]["content"], key) for row, key in originals]
        if spec is not None:
            # A separate generator: the rows above stay those of the same family without a mixture
            _add_wrong_answers(spec, family, rows, keys, random.Random(f"{seed}-wrong-{family_id}"))
        train_rows += rows
    if spec is not None and BAD_SOURCE in sizes:
        train_rows += _bad_source_rows(spec, sizes[BAD_SOURCE], prompts, random.Random(f"{seed}-bad"))
    random.Random(f"{seed}-shuffle").shuffle(train_rows)
    return datasets.Dataset.from_list(train_rows), datasets.Dataset.from_list(eval_rows)


def _check_pool_arguments(
    num_train: int,
    num_eval_per_family: int,
    corrupt_rate: float,
    near_duplicate_rate: float,
    spec: Mixture | None,
    num_families: int,
) -> None:
    """ValueError for `make_instruction_pool` arguments out of range."""
    if num_train < num_families:
        raise ValueError(f"num_train={num_train} must be at least the number of families ({num_families})")
    if num_eval_per_family < 1:
        raise ValueError(f"num_eval_per_family={num_eval_per_family} must be at least 1")
    for name, rate in (("corrupt_rate", corrupt_rate), ("near_duplicate_rate", near_duplicate_rate)):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{name}={rate} must be in [0, 1)")
    if spec is not None and corrupt_rate + spec.wrong_answer_rate >= 1.0:
        raise ValueError(
            f"corrupt_rate={corrupt_rate} plus the mixture's wrong_answer_rate={spec.wrong_answer_rate} must be < 1"
        )


def _draw_key(family: str, held_out: set, rng: random.Random) -> tuple[Any, ...]:
    """A random item key of `family` that is not held out."""
    while True:
        key = _sample_key(family, rng)
        if key not in held_out:
            return key


def _noise_rows(family: str, size: int, draw: Callable[[], tuple], rng: random.Random) -> list[dict[str, Any]]:
    """The noise family's `size` rows: every instruction twice, with two independent random answers."""
    rows: list[dict[str, Any]] = []
    while len(rows) < size:
        key = draw()
        for _ in range(min(2, size - len(rows))):
            instruction, answer = _render(family, key, rng)
            rows.append(_row(family, instruction, answer, True, False))
    return rows


def _task_rows(
    family: str,
    size: int,
    draw: Callable[[], tuple],
    rng: random.Random,
    near_duplicate_rate: float,
    corrupt_rate: float,
) -> tuple[list[dict[str, Any]], list[tuple]]:
    """A task family's `size` rows and their item keys: originals, then near-duplicates of them (same answer), then
    exactly `round(corrupt_rate * size)` rows with one character of the answer changed."""
    num_near = round(near_duplicate_rate * size)
    keys = [draw() for _ in range(size - num_near)]
    rows = []
    for key in keys:
        instruction, answer = _render(family, key, rng)
        rows.append(_row(family, instruction, answer, False, False))
    originals = rows[: size - num_near]
    for _ in range(num_near):
        source = rng.choice(range(len(originals)))  # the same draw as choice(originals)
        instruction = _near_duplicate(originals[source]["messages"][0]["content"], rng)
        rows.append(_row(family, instruction, originals[source]["messages"][1]["content"], False, True))
        keys.append(keys[source])
    for index in rng.sample(range(size), round(corrupt_rate * size)):
        message = rows[index]["messages"][1]
        message["content"] = _corrupt(message["content"], rng)
        rows[index]["is_corrupted"] = True
    return rows, keys


def _add_wrong_answers(
    spec: Mixture, family: str, rows: list[dict[str, Any]], keys: list[tuple], rng: random.Random
) -> None:
    """The mixture's conflicting noise: `round(wrong_answer_rate * size)` rows not yet corrupted get a wrong answer of
    its `wrong_answer_kind`."""
    clean = [i for i, row in enumerate(rows) if not row["is_corrupted"]]
    for index in rng.sample(clean, round(spec.wrong_answer_rate * len(rows))):
        rows[index]["messages"][1]["content"] = _mixture_wrong_answer(spec, family, keys[index], rng)
        rows[index]["is_corrupted"] = True


def _bad_source_rows(
    spec: Mixture, size: int, prompts: dict[str, list[tuple[str, tuple]]], rng: random.Random
) -> list[dict[str, Any]]:
    """The bad source's `size` rows: prompts of `bad_source_families` (in turn) with wrong answers."""
    rows = []
    for index in range(size):
        family = spec.bad_source_families[index % len(spec.bad_source_families)]
        instruction, key = rng.choice(prompts[family])
        rows.append(_row(BAD_SOURCE, instruction, _mixture_wrong_answer(spec, family, key, rng), True, False))
    return rows
