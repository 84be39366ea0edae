"""The embedded default: generated pool, character tokenizer, chat template, tiny model, cached warm-up, exact match.

Everything runs offline on CPU; the warm-ups here are a few steps of a small model in a cache under ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

from trl_lead import embedded, files, pool
from trl_lead.embedded import (
    ASSISTANT_TOKEN,
    FAMILIES,
    NOISE_FAMILY,
    build_tiny_model,
    build_tokenizer,
    exact_match,
    extract_answer,
    make_instruction_pool,
    warmed_up_base,
)
from trl_lead.pool import LOOKUP_TABLE

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL_MODEL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}


# --------------------------------------------------------------------------------------------------------------------
# Helpers: an independent oracle for the answers, and a normaliser for near-duplicates
# --------------------------------------------------------------------------------------------------------------------


def instruction(row) -> str:
    return row["messages"][0]["content"]


def answer(row) -> str:
    return row["messages"][1]["content"]


def normalise(text: str) -> str:
    """Undo the near-duplicate surface edits: case of the first letter, doubled space, trailing '!' or added '?'."""
    text = re.sub(r" +", " ", text)
    text = text.rstrip("!")
    return text[0].lower() + text[1:]


def oracle(family: str, text: str) -> str | None:
    """The correct answer, computed from the instruction text alone (None for the noise family)."""
    text = normalise(text).rstrip("?") if family != "lookup" else normalise(text)
    if family == "lookup":
        countries = [(country, word) for country, word in LOOKUP_TABLE if re.search(rf"\b{country}\b", text, re.I)]
        assert len(countries) == 1, text
        return countries[0][1]
    keyword, payload = re.fullmatch(r"(\w+): (\S+)", text).groups()
    if family == "easy":
        assert keyword == "last"
        return payload[-1]
    if family == "copy":
        return payload
    if family == "format":
        return payload.upper()
    if family == "reverse":
        return payload[::-1]
    if family == "sort":
        return "".join(sorted(payload))
    if family == "add":
        a, b = payload.split("+")
        return str(int(a) + int(b))
    return None


@pytest.fixture(scope="module")
def default_pool():
    return make_instruction_pool(seed=0)


# --------------------------------------------------------------------------------------------------------------------
# Pool
# --------------------------------------------------------------------------------------------------------------------


def test_pool_is_deterministic_for_a_seed_and_differs_across_seeds():
    a_train, a_eval = make_instruction_pool(num_train=300, num_eval_per_family=10, seed=3)
    b_train, b_eval = make_instruction_pool(num_train=300, num_eval_per_family=10, seed=3)
    c_train, c_eval = make_instruction_pool(num_train=300, num_eval_per_family=10, seed=4)
    assert a_train.to_list() == b_train.to_list()
    assert a_eval.to_list() == b_eval.to_list()
    assert a_train.to_list() != c_train.to_list()
    assert a_eval.to_list() != c_eval.to_list()
    # not just a reordering: the items themselves change
    assert {instruction(r) for r in a_train} != {instruction(r) for r in c_train}


def test_pool_columns_sizes_and_families(default_pool):
    train, evaluation = default_pool
    assert len(train) == pool.DEFAULT_NUM_TRAIN
    assert len(evaluation) == pool.DEFAULT_NUM_EVAL_PER_FAMILY * len(FAMILIES)
    for dataset in (train, evaluation):
        assert {"messages", "family", "family_id", "is_corrupted"} <= set(dataset.column_names)
        assert set(dataset["family"]) == set(FAMILIES)
        for family, family_id in zip(dataset["family"], dataset["family_id"]):
            assert FAMILIES[family_id] == family
        for row in dataset.select(range(50)):
            assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert Counter(evaluation["family"]) == {f: pool.DEFAULT_NUM_EVAL_PER_FAMILY for f in FAMILIES}
    sizes = Counter(train["family"])
    assert max(sizes.values()) >= 2 * min(sizes.values())  # families differ in size
    # short enough for a tiny model
    assert max(len(instruction(r)) for r in train) <= 24
    assert max(len(answer(r)) for r in train) <= 8
    assert max(len(instruction(r)) for r in evaluation) <= 24


def test_answers_are_right_except_the_corrupted_ones(default_pool):
    train, evaluation = default_pool
    for row in train:
        if row["family"] == NOISE_FAMILY:
            assert row["is_corrupted"]
            continue
        correct = oracle(row["family"], instruction(row))
        assert (answer(row) != correct) == row["is_corrupted"], row
    for row in evaluation:
        if row["family"] != NOISE_FAMILY:
            assert answer(row) == oracle(row["family"], instruction(row)), row
            assert not row["is_corrupted"]


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.2])
def test_corrupted_share_matches_the_rate(rate):
    train, _ = make_instruction_pool(num_train=2000, num_eval_per_family=5, seed=1, corrupt_rate=rate)
    learnable = train.filter(lambda r: r["family"] != NOISE_FAMILY)
    share = sum(learnable["is_corrupted"]) / len(learnable)
    assert abs(share - rate) < 0.01
    for family in FAMILIES:
        if family == NOISE_FAMILY:
            continue
        rows = learnable.filter(lambda r, f=family: r["family"] == f)
        assert abs(sum(rows["is_corrupted"]) / len(rows) - rate) < 0.02


def test_eval_items_are_held_out(default_pool):
    train, evaluation = default_pool
    seen = {(r["family"], normalise(instruction(r)).rstrip("?")) for r in train}
    for row in evaluation:
        assert (row["family"], normalise(instruction(row)).rstrip("?")) not in seen, instruction(row)
    assert not {instruction(r) for r in evaluation} & {instruction(r) for r in train}
    assert len({instruction(r) for r in evaluation}) == len(evaluation)  # distinct within the eval set
    # lookup is memorisation: every held-out fact is asked in training, in another phrasing
    trained_words = {answer(r) for r in train if r["family"] == "lookup" and not r["is_corrupted"]}
    assert {answer(r) for r in evaluation if r["family"] == "lookup"} <= trained_words


def test_noise_answers_are_not_a_function_of_the_instruction(default_pool):
    train, evaluation = default_pool
    answers = defaultdict(list)
    for row in train:
        if row["family"] == NOISE_FAMILY:
            answers[instruction(row)].append(answer(row))
    repeated = [a for a in answers.values() if len(a) >= 2]
    assert len(repeated) >= 0.9 * len(answers)
    contradictory = [a for a in repeated if len(set(a)) > 1]
    assert len(contradictory) >= 0.9 * len(repeated)
    noise_eval = evaluation.filter(lambda r: r["family"] == NOISE_FAMILY)
    assert all(noise_eval["is_corrupted"])
    assert not {instruction(r) for r in noise_eval} & set(answers)


def test_near_duplicates(default_pool):
    train, _ = default_pool
    originals = defaultdict(set)
    for row in train:
        if not row["is_near_duplicate"]:
            originals[row["family"]].add(instruction(row))
    near = [row for row in train if row["is_near_duplicate"]]
    learnable_size = sum(1 for r in train if r["family"] != NOISE_FAMILY)
    assert abs(len(near) / learnable_size - pool.DEFAULT_NEAR_DUPLICATE_RATE) < 0.01
    for row in near:
        text = instruction(row)
        assert text not in originals[row["family"]]  # a surface change ...
        candidates = {normalise(t) for t in originals[row["family"]]}
        base = normalise(text)
        assert base in candidates or base.rstrip("?") in candidates, text  # ... of an item of the same family


def test_pool_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_train"):
        make_instruction_pool(num_train=3)
    with pytest.raises(ValueError, match="corrupt_rate"):
        make_instruction_pool(corrupt_rate=1.5)
    with pytest.raises(ValueError, match="lookup"):
        make_instruction_pool(num_eval_per_family=500)


# --------------------------------------------------------------------------------------------------------------------
# Tokenizer and chat template
# --------------------------------------------------------------------------------------------------------------------


def test_tokenizer_is_character_level_deterministic_and_round_trips():
    a, b = build_tokenizer(), build_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    text = "copy: Ab9 ~{x}\nthe capital of Zorvia?"
    ids = a(text)["input_ids"]
    assert len(ids) == len(text)  # one token per character, no special tokens added
    assert a.decode(ids) == text
    assert a.unk_token_id not in ids
    assert (a.pad_token, a.bos_token, a.eos_token) == ("<pad>", "<bos>", "<eos>")
    assert len({a.pad_token_id, a.bos_token_id, a.eos_token_id}) == 3
    extended = build_tokenizer(texts=["é"])
    assert extended.decode(extended("é")["input_ids"]) == "é"
    assert len(extended) == len(a) + 1


def _masked_text(tokenizer, messages) -> tuple[str, list[int]]:
    out = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True, tokenize=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    return tokenizer.decode([i for i, m in zip(ids, mask) if m]), mask


def test_assistant_mask_covers_exactly_answer_and_eos(default_pool):
    tokenizer = build_tokenizer()
    train, _ = default_pool
    for row in train.select(range(40)):
        text, mask = _masked_text(tokenizer, row["messages"])
        assert text == answer(row) + tokenizer.eos_token
        assert sum(mask) == len(answer(row)) + 1
        assert mask[-sum(mask) :] == [1] * sum(mask)  # one block, at the end
    # several turns: each assistant turn is masked, nothing else
    turns = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "copy: ab"},
        {"role": "assistant", "content": "ab"},
        {"role": "user", "content": "add: 1+2"},
        {"role": "assistant", "content": "3"},
    ]
    text, _ = _masked_text(tokenizer, turns)
    assert text == "ab<eos>3<eos>"
    assert has_generation_markers(tokenizer.chat_template)
    assert is_chat_template_stop_token_trained(tokenizer)  # what TRL checks before it warns


def test_generation_prompt_is_a_prefix_of_the_training_text():
    tokenizer = build_tokenizer()
    messages = [{"role": "user", "content": "reverse: abc"}, {"role": "assistant", "content": "cba"}]
    prompt = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert prompt == "<bos><|user|>reverse: abc" + ASSISTANT_TOKEN
    assert full == prompt + "cba<eos>"
    assert not tokenizer.apply_chat_template(messages[:1], tokenize=False).endswith(ASSISTANT_TOKEN)
    with pytest.raises(Exception, match="Unknown role"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_tokenizer_save_and_load(tmp_path):
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    messages = [{"role": "user", "content": "sort: 312"}, {"role": "assistant", "content": "123"}]
    kwargs = {"return_assistant_tokens_mask": True, "return_dict": True, "tokenize": True}
    assert loaded.apply_chat_template(messages, **kwargs) == tokenizer.apply_chat_template(messages, **kwargs)
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.bos_token_id) == (
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        tokenizer.bos_token_id,
    )


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.numerics
def test_tiny_model_is_deterministic_and_consistent():
    tokenizer = build_tokenizer()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_tiny_model(tokenizer, seed=0)
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG is left alone
    b = build_tiny_model(tokenizer, seed=0)
    c = build_tiny_model(tokenizer, seed=1)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))
    assert 50_000 <= a.num_parameters() <= 1_000_000
    default = build_tiny_model(tokenizer, **embedded.DEFAULT_MODEL_KWARGS)
    assert 50_000 <= default.num_parameters() <= 1_000_000
    for config in (a.config, a.generation_config):
        assert config.pad_token_id == tokenizer.pad_token_id
        assert config.eos_token_id == tokenizer.eos_token_id
        assert config.bos_token_id == tokenizer.bos_token_id
    assert a.config.vocab_size == len(tokenizer)
    assert a.generation_config.do_sample is False
    with pytest.raises(ValueError, match="divisible"):
        build_tiny_model(tokenizer, hidden_size=30, num_heads=4)


# --------------------------------------------------------------------------------------------------------------------
# Exact match
# --------------------------------------------------------------------------------------------------------------------


def test_extract_answer():
    tokenizer = build_tokenizer()
    enc = lambda s: tokenizer(s)["input_ids"]  # noqa: E731
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    assert extract_answer([*enc("abc"), eos, *enc("zz"), pad], tokenizer) == "abc"
    assert extract_answer([*enc(" 42 "), eos], tokenizer) == "42"
    assert extract_answer(enc("abcd"), tokenizer) == "abcd"  # ran out of tokens: everything counts
    assert extract_answer([*enc("ab"), pad, pad], tokenizer) == "ab"
    assert extract_answer([eos, *enc("ab")], tokenizer) == ""
    # a stray special token stays in the text, so it can never match a reference answer
    assert extract_answer([*enc("ab"), tokenizer.convert_tokens_to_ids("<|user|>"), eos], tokenizer) == "ab<|user|>"


class StubModel(torch.nn.Module):
    """Answers from a dict, checking that prompts arrive left-padded and end with the generation prompt."""

    def __init__(self, tokenizer, answers: dict[str, str]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer, self.answers, self.calls = tokenizer, answers, []

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        tok = self.tokenizer
        assert kwargs["eos_token_id"] == tok.eos_token_id and kwargs["pad_token_id"] == tok.pad_token_id
        assert not kwargs.get("do_sample", False)
        self.calls.append(input_ids.shape[0])
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            start = mask.index(1)
            assert all(mask[start:]) and all(i == tok.pad_token_id for i in ids[:start])
            prompt = tok.decode(ids[start:])
            assert prompt.startswith("<bos><|user|>") and prompt.endswith(ASSISTANT_TOKEN)
            question = prompt[len("<bos><|user|>") : -len(ASSISTANT_TOKEN)]
            new = [*tok(self.answers.get(question, "?"))["input_ids"], tok.eos_token_id]
            rows.append(ids + (new + [tok.pad_token_id] * max_new_tokens)[:max_new_tokens])
        return torch.tensor(rows)


@pytest.mark.numerics
def test_exact_match_scores_and_aggregates(default_pool):
    tokenizer = build_tokenizer()
    _, evaluation = default_pool
    evaluation = evaluation.select(range(0, len(evaluation), 5))  # 10 rows per family, every length of prompt
    reference = {instruction(r): answer(r) for r in evaluation}
    model = StubModel(tokenizer, reference)
    scores = exact_match(model, tokenizer, evaluation, batch_size=16)
    assert scores == {**{f: 100.0 for f in FAMILIES}, "overall": 100.0, "overall_learnable": 100.0}
    assert model.calls == [16] * (len(evaluation) // 16) + ([len(evaluation) % 16] if len(evaluation) % 16 else [])
    assert model.training  # the train/eval mode is restored

    # right on the easy family and on half of the copy rows, with padding around the answer; wrong elsewhere
    copy_rows = [r for r in evaluation if r["family"] == "copy"]
    partial = {instruction(r): f" {answer(r)} " for r in evaluation if r["family"] == "easy"}
    partial.update({instruction(r): answer(r) for r in copy_rows[::2]})
    partial.update({instruction(r): answer(r) for r in evaluation if r["family"] == NOISE_FAMILY})
    scores = exact_match(StubModel(tokenizer, partial), tokenizer, evaluation, batch_size=7)
    assert scores["easy"] == 100.0 and scores["noise"] == 100.0
    assert scores["copy"] == pytest.approx(100.0 * len(copy_rows[::2]) / len(copy_rows))
    assert scores["add"] == 0.0
    hits = 10 + 10 + len(copy_rows[::2])
    assert scores["overall"] == pytest.approx(100.0 * hits / len(evaluation))
    assert scores["overall_learnable"] == pytest.approx(100.0 * (hits - 10) / (len(evaluation) - 10))


def _train_plain(model, tokenizer, rows, steps: int, lr: float) -> None:
    """A plain torch loop on the chat template's assistant mask (independent of TRL)."""
    batch = [
        tokenizer.apply_chat_template(r["messages"], return_assistant_tokens_mask=True, return_dict=True) for r in rows
    ]
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.tensor([b["input_ids"] + [tokenizer.pad_token_id] * (width - len(b["input_ids"])) for b in batch])
    labels = torch.tensor(
        [
            [i if m else -100 for i, m in zip(b["input_ids"], b["assistant_masks"])]
            + [-100] * (width - len(b["input_ids"]))
            for b in batch
        ]
    )
    mask = (ids != tokenizer.pad_token_id).long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    with embedded.torch_threads(1):
        for _ in range(steps):
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()


@pytest.mark.numerics
def test_exact_match_of_a_memorised_set_beats_an_untrained_model():
    tokenizer = build_tokenizer()
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "family": f}
        for q, a, f in [
            ("copy: ab", "ab", "copy"),
            ("add: 10+5", "15", "add"),
            ("sort: 9312", "1239", "sort"),  # the longest prompt: the others are left-padded
            ("last: xyz", "z", "easy"),
        ]
    ]
    dataset = datasets.Dataset.from_list(rows)
    model = build_tiny_model(tokenizer, seed=0, **SMALL_MODEL)
    before = exact_match(model, tokenizer, dataset)
    assert before["overall"] == 0.0
    _train_plain(model, tokenizer, rows, steps=80, lr=1e-2)
    after = exact_match(model, tokenizer, dataset, batch_size=4)
    assert after["overall"] == 100.0, after
    # batched (left-padded) generation gives the same answers as one prompt at a time
    assert exact_match(model, tokenizer, dataset, batch_size=1) == after


def test_exact_match_restores_torch_threads(default_pool):
    tokenizer = build_tokenizer()
    _, evaluation = default_pool
    previous = torch.get_num_threads()
    exact_match(StubModel(tokenizer, {}), tokenizer, evaluation.select(range(3)), num_threads=1)
    assert torch.get_num_threads() == previous


# --------------------------------------------------------------------------------------------------------------------
# Warm-up and its cache
# --------------------------------------------------------------------------------------------------------------------

WARMUP = {"steps": 12, "seed": 0, "num_train": 400, "model_kwargs": SMALL_MODEL}


@pytest.fixture(scope="module")
def warmed(tmp_path_factory):
    """One real (short) warm-up with TRL's SFTTrainer, shared by the tests below."""
    cache = tmp_path_factory.mktemp("cache")
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    expected = (torch.rand(2), random.random(), np.random.rand())
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    threads = torch.get_num_threads()
    path = warmed_up_base(cache, **WARMUP)
    after = (torch.rand(2), random.random(), np.random.rand())
    return {
        "cache": cache,
        "path": path,
        "rng_kept": torch.equal(after[0], expected[0]) and after[1:] == expected[1:],
        "threads_kept": torch.get_num_threads() == threads,
    }


@pytest.mark.numerics
def test_warmup_saves_a_loadable_model_and_tokenizer(warmed):
    path = Path(warmed["path"])
    assert path.parent == warmed["cache"] and path.name.startswith("warmup-")
    info = json.loads((path / "warmup.json").read_text())
    assert info["settings"]["steps"] == WARMUP["steps"]
    assert info["settings"]["embedded_version"] == embedded.EMBEDDED_VERSION
    losses = info["logged_losses"]
    assert len(losses) >= 2 and losses[-1] < losses[0]  # it trained
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.chat_template == embedded.CHAT_TEMPLATE
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert model.config.hidden_size == SMALL_MODEL["hidden_size"]
    assert not [p for p in warmed["cache"].iterdir() if p.name.startswith(".tmp-")]  # no temp dir left
    assert warmed["rng_kept"] and warmed["threads_kept"]


@pytest.mark.numerics
def test_warmup_is_deterministic(warmed, tmp_path):
    again = warmed_up_base(tmp_path, **WARMUP)
    assert Path(again).name == Path(warmed["path"]).name  # same settings, same key
    a = AutoModelForCausalLM.from_pretrained(warmed["path"]).state_dict()
    b = AutoModelForCausalLM.from_pretrained(again).state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_second_call_is_a_cache_hit_without_training(warmed, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(embedded, "_train_warmup", no_training)
    assert warmed_up_base(warmed["cache"], **WARMUP) == warmed["path"]
    monkeypatch.setenv(files.CACHE_ENV_VAR, str(warmed["cache"]))
    assert warmed_up_base(None, **WARMUP) == warmed["path"]  # the default cache dir comes from the env var


def _fake_training(calls: list):
    def fake(settings, save_dir, verbose):
        calls.append(settings)
        (Path(save_dir) / "config.json").write_text("{}")
        return {"train_loss": 0.0, "logged_losses": [], "wall_time_s": 0.0}

    return fake


def test_interrupted_builds_are_not_cache_hits(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(embedded, "_train_warmup", _fake_training(calls))
    settings = embedded.warmup_settings(steps=5, seed=1)
    final = tmp_path / f"warmup-{embedded._fingerprint(settings)}"
    # leftovers of an interrupted build: a temp dir holding everything, and a final dir without the marker
    leftover = tmp_path / f".tmp-{final.name}-crashed"
    leftover.mkdir()
    (leftover / "config.json").write_text("{}")
    (leftover / "warmup.json").write_text("{}")
    final.mkdir()
    (final / "config.json").write_text("half written")

    path = warmed_up_base(tmp_path, steps=5, seed=1)
    assert path == str(final) and len(calls) == 1
    assert (final / "warmup.json").is_file() and (final / "config.json").read_text() == "{}"
    assert warmed_up_base(tmp_path, steps=5, seed=1) == path and len(calls) == 1  # now a hit


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def crash(settings, save_dir, verbose):
        (Path(save_dir) / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "_train_warmup", crash)
    with pytest.raises(KeyboardInterrupt):
        warmed_up_base(tmp_path, steps=5)
    assert list(tmp_path.iterdir()) == []


def test_cache_key_follows_the_settings(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(embedded, "_train_warmup", _fake_training(calls))
    paths = {
        warmed_up_base(tmp_path, steps=5),
        warmed_up_base(tmp_path, steps=6),
        warmed_up_base(tmp_path, steps=5, seed=1),
        warmed_up_base(tmp_path, steps=5, learning_rate=1e-4),
        warmed_up_base(tmp_path, steps=5, model_kwargs={"hidden_size": 32}),
    }
    assert len(paths) == 5 and len(calls) == 5
    monkeypatch.setattr(embedded, "EMBEDDED_VERSION", embedded.EMBEDDED_VERSION + 1)
    assert warmed_up_base(tmp_path, steps=5) not in paths
    monkeypatch.undo()
    monkeypatch.setattr(embedded, "_train_warmup", _fake_training(calls))
    assert warmed_up_base(tmp_path, steps=5) in paths
    monkeypatch.setitem(pool.FAMILY_WEIGHTS, "easy", 2.0)  # a change to the generated pool alone
    assert warmed_up_base(tmp_path, steps=5) not in paths


@pytest.mark.numerics
def test_default_warmup_is_partly_right_with_room_to_improve(tmp_path):
    """The real default warm-up (20-40 s on 2 cores, or a cache hit where $TRL_LEAD_CACHE is set): well-formed
    answers, some families partly right, none solved.

    The warm-up's last bits differ between CPUs (a Xeon's AVX-512 kernels gave one malformed answer here), and a
    greedy answer can flip with them, so the bounds are set from the spread over warm-up seeds 0-2, natively and
    under the second kernels (README "Tests"): best learnable family 30-78% (bound 15; seed 0: 36 / 30), learnable
    overall 7.4-20.6% (bounds 2-50; seed 0: 8.6 / 7.4), noise 0% (bound 4), malformed answers 0-7 of 400 (bound 20;
    seed 0: 0 / 0). An untrained model's answers are nearly all malformed (12 tokens of noise)."""
    path = warmed_up_base(os.environ.get(files.CACHE_ENV_VAR) or tmp_path)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    _, evaluation = make_instruction_pool(seed=0)
    scores = exact_match(model, tokenizer, evaluation)
    learnable = [scores[f] for f in FAMILIES if f != NOISE_FAMILY]
    assert max(learnable) >= 15.0, scores
    assert 2.0 <= scores["overall_learnable"] <= 50.0, scores
    assert scores[NOISE_FAMILY] <= 4.0, scores
    # well-formed: answers are short and free of special tokens, all but at most 5%
    answers = embedded.generate_answers(model, tokenizer, [r["messages"][:1] for r in evaluation])
    malformed = [a for a in answers if not (0 < len(a) <= 8 and "<" not in a)]
    assert len(malformed) <= 0.05 * len(answers), malformed
