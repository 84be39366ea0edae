"""The mixture presets of the generated pool (trl_lead.pool.MIXTURES): noise that conflicts with the tasks."""

import hashlib
import json
import re
from collections import Counter

import pytest

from trl_lead.pool import (
    BAD_SOURCE,
    BAD_SOURCE_ID,
    FAMILIES,
    FAMILY_WEIGHTS,
    LOOKUP_TABLE,
    MIXTURE_NUM_EVAL_PER_FAMILY,
    MIXTURES,
    NOISE_FAMILY,
    Mixture,
    make_instruction_pool,
)

CAPITALS = dict(LOOKUP_TABLE)


def solve(instruction: str) -> str:
    """The right answer to a task prompt, worked out from the prompt alone (near-duplicate edits undone)."""
    text = re.sub(" +", " ", instruction)
    if "capital" in text.lower():
        countries = [w for w in re.findall(r"[A-Z][a-z]+", text) if w in CAPITALS]
        assert len(countries) == 1, instruction
        return CAPITALS[countries[0]]
    text = text[0].lower() + text[1:]
    task, payload = text.rstrip("!?").split(": ")
    if task == "add":
        left, right = payload.split("+")
        return str(int(left) + int(right))
    return {
        "last": payload[-1],
        "copy": payload,
        "upper": payload.upper(),
        "reverse": payload[::-1],
        "sort": "".join(sorted(payload)),
    }[task]


def normalise(prompt: str) -> str:
    """A prompt with the near-duplicate edits undone (case, doubled space, trailing ! and ?)."""
    return re.sub(" +", " ", prompt.lower()).rstrip("!?")


def expected_sizes(num_train: int, weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {name: num_train * w / total for name, w in weights.items()}


def pool_digest(train, evaluation) -> str:
    return hashlib.sha256(json.dumps([train.to_list(), evaluation.to_list()], sort_keys=True).encode()).hexdigest()


@pytest.fixture(scope="module", params=sorted(MIXTURES))
def preset(request):
    name = request.param
    train, evaluation = make_instruction_pool(mixture=name, num_eval_per_family=MIXTURE_NUM_EVAL_PER_FAMILY)
    return name, MIXTURES[name], train, evaluation


def test_default_pool_unchanged():
    # The digest of the pool generated before mixtures existed (commit c98ae39): the cached warm-up and the tests'
    # expectations depend on it
    train, evaluation = make_instruction_pool()
    assert pool_digest(train, evaluation)[:16] == "7b9fad5f0f347e66"
    assert "is_clean" not in train.column_names and BAD_SOURCE not in train["family"]


def test_mixture_without_conflict_is_the_default_pool():
    # The mixture code path adds only its conflicts: the default's weights, no wrong answers, no bad source
    plain = Mixture(family_weights=dict(FAMILY_WEIGHTS), wrong_answer_rate=0.0)
    for seed in (0, 5):
        default = make_instruction_pool(num_train=600, num_eval_per_family=20, seed=seed)
        same = make_instruction_pool(num_train=600, num_eval_per_family=20, seed=seed, mixture=plain)
        assert pool_digest(*same) == pool_digest(*default)


def test_preset_sizes_and_rates_are_exact(preset):
    name, mixture, train, _ = preset
    plain, _ = make_instruction_pool(mixture=name, corrupt_rate=0.0, num_eval_per_family=1)
    weights = {**mixture.family_weights, BAD_SOURCE: mixture.bad_source_weight}
    for pool, corrupt_rate in ((train, 0.05), (plain, 0.0)):
        sizes = Counter(pool["family"])
        assert sum(sizes.values()) == 2000 and set(sizes) == set(weights)
        for name, exact in expected_sizes(2000, weights).items():
            assert abs(sizes[name] - exact) < 1, name
        wrong = Counter(f for f, bad in zip(pool["family"], pool["is_corrupted"]) if bad)
        for family, size in sizes.items():
            if family in (NOISE_FAMILY, BAD_SOURCE):
                assert wrong[family] == size  # every row of the unlearnable family and the bad source
            else:
                assert wrong[family] == round(corrupt_rate * size) + round(mixture.wrong_answer_rate * size), family
        ids = {f: i for f, i in zip(pool["family"], pool["family_id"])}
        assert ids == {f: (BAD_SOURCE_ID if f == BAD_SOURCE else FAMILIES.index(f)) for f in sizes}


def test_is_corrupted_is_exactly_a_wrong_answer(preset):
    # The oracle's flag: a row is clean exactly when its answer is the right one (worked out independently)
    _, _, train, _ = preset
    for row in train:
        if row["family"] == NOISE_FAMILY:
            assert row["is_corrupted"]
            continue
        prompt, answer = (m["content"] for m in row["messages"])
        assert row["is_corrupted"] == (answer != solve(prompt)), (row["family"], prompt, answer)


def test_wrong_answers_have_the_tasks_format():
    # "Another prompt's answer": with no one-character corruption, a wrong answer to an add prompt is still a sum of
    # the family's operands, a wrong sort answer still sorted digits, a wrong lookup answer another fact's word
    train, _ = make_instruction_pool(mixture="conflict-a", corrupt_rate=0.0, num_eval_per_family=1)
    words = set(CAPITALS.values())
    for row in train:
        prompt, answer = (m["content"] for m in row["messages"])
        if not row["is_corrupted"] or row["family"] == NOISE_FAMILY:
            continue
        task = solve(prompt)
        if prompt.lower().startswith("add"):
            assert 11 <= int(answer) <= 108 and answer != task
        elif prompt.lower().startswith("sort"):
            assert answer.isdigit() and answer == "".join(sorted(answer)) and answer != task
        elif "capital" in prompt.lower():
            assert answer in words and answer != task


def test_bad_source_repeats_its_tasks_prompts(preset):
    _, mixture, train, _ = preset
    task_prompts = {
        row["messages"][0]["content"]: row["family"]
        for row in train
        if row["family"] in mixture.bad_source_families and not row["is_near_duplicate"]
    }
    bad = [row for row in train if row["family"] == BAD_SOURCE]
    assert bad and all(row["is_corrupted"] and row["family_id"] == BAD_SOURCE_ID for row in bad)
    tasks = Counter(task_prompts.get(row["messages"][0]["content"]) for row in bad)
    assert None not in tasks  # every bad-source prompt is one of its tasks' own training prompts
    assert set(tasks) == set(mixture.bad_source_families)
    assert max(tasks.values()) - min(tasks.values()) <= 1  # the tasks in turn
    assert all(row["messages"][1]["content"] != solve(row["messages"][0]["content"]) for row in bad)


def test_held_out_sets(preset):
    _, mixture, train, evaluation = preset
    counts = Counter(evaluation["family"])
    for family in mixture.family_weights:
        assert counts[family] == (120 if family == "lookup" else MIXTURE_NUM_EVAL_PER_FAMILY)
    assert BAD_SOURCE not in counts
    seen = {normalise(row["messages"][0]["content"]) for row in train}
    for row in evaluation:
        prompt, answer = (m["content"] for m in row["messages"])
        assert normalise(prompt) not in seen  # not even as a near-duplicate
        if row["family"] != NOISE_FAMILY:
            assert answer == solve(prompt)


def test_presets_differ_as_issue_12_asks():
    a, c = MIXTURES["conflict-a"], MIXTURES["conflict-c"]
    assert a.family_weights == FAMILY_WEIGHTS  # (a): the default pool's families and sizes, with conflicts
    assert c.family_weights != a.family_weights and c.wrong_answer_rate != a.wrong_answer_rate
    for mixture in (a, c):
        assert NOISE_FAMILY in mixture.family_weights and mixture.bad_source_weight > 0
        assert mixture.wrong_answer_rate > 0


def test_near_misses_are_close_to_the_right_answer_in_the_tasks_format():
    # Mixture (d): with no one-character corruption, every wrong answer (the tasks' and the bad source's) is one small
    # edit of the right one, worked out from the prompt: a sum off by 1, 2 or 10; the sorted digits with one adjacent
    # pair swapped; otherwise one character replaced by another of the same kind
    train, _ = make_instruction_pool(mixture="near-miss-d", corrupt_rate=0.0, num_eval_per_family=1)
    kinds = Counter()
    for row in train:
        prompt, answer = (m["content"] for m in row["messages"])
        right = solve(prompt)
        if not row["is_corrupted"]:
            assert answer == right
            continue
        if prompt.lower().startswith("add"):
            assert abs(int(answer) - int(right)) in (1, 2, 10)
            kinds["add"] += 1
        elif prompt.lower().startswith("sort") and len(set(right)) > 1:
            i = next(i for i in range(len(right)) if answer[i] != right[i])
            assert answer == right[:i] + right[i + 1] + right[i] + right[i + 2 :]
            kinds["sort"] += 1
        else:
            assert len(answer) == len(right)
            changed = [(a, b) for a, b in zip(answer, right) if a != b]
            assert len(changed) == 1 and changed[0][0].isupper() == changed[0][1].isupper()
            kinds["letters"] += 1
    assert min(kinds.values()) > 50, kinds  # every kind of edit is there


def test_pool_warm_up_is_part_of_the_warm_up_key():
    from trl_lead.embedded import warmup_settings

    default, on_pool = warmup_settings(steps=150), warmup_settings(steps=150, mixture="near-miss-d")
    assert "mixture" not in default  # the embedded default's cache key (and its cached warm-ups) stay as they were
    assert on_pool["mixture"] == "near-miss-d" and on_pool["pool_digest"] != default["pool_digest"]
    assert MIXTURES["near-miss-d"].pool_warmup_steps > 0 and MIXTURES["conflict-a"].pool_warmup_steps == 0


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"family_weights": {"nope": 1.0}, "wrong_answer_rate": 0.1}, "family_weights"),
        ({"family_weights": {"copy": 0.0}, "wrong_answer_rate": 0.1}, "family_weights"),
        ({"family_weights": {"copy": 1.0}, "wrong_answer_rate": 1.0}, "wrong_answer_rate"),
        ({"family_weights": {"copy": 1.0}, "wrong_answer_rate": 0.1, "bad_source_weight": 1.0}, "bad_source_families"),
        (
            {
                "family_weights": {"copy": 1.0, "noise": 1.0},
                "wrong_answer_rate": 0.1,
                "bad_source_families": ("noise",),
                "bad_source_weight": 1.0,
            },
            "bad_source_families",
        ),
        ({"family_weights": {"copy": 1.0}, "wrong_answer_rate": 0.1, "bad_source_weight": -1.0}, "bad_source_weight"),
        ({"family_weights": {"copy": 1.0}, "wrong_answer_rate": 0.1, "wrong_answer_kind": "far"}, "wrong_answer_kind"),
        ({"family_weights": {"copy": 1.0}, "wrong_answer_rate": 0.1, "pool_warmup_steps": -1}, "pool_warmup_steps"),
    ],
)
def test_bad_mixtures_are_refused(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Mixture(**kwargs)


def test_bad_pool_arguments_are_refused():
    with pytest.raises(ValueError, match="mixture='conflict-z'"):
        make_instruction_pool(mixture="conflict-z")
    with pytest.raises(ValueError, match="corrupt_rate"):
        make_instruction_pool(mixture="conflict-a", corrupt_rate=0.8)
