"""Tests of trl_lead.clustering: IFD scores, embeddings, k-means variants, the disk cache, bad inputs.

Everything is built locally (a char-level tokenizer and a 2-layer Llama of hidden size 32); nothing is downloaded.
"""

from __future__ import annotations

import math
import string

import numpy as np
import pytest
import torch
from datasets import Dataset
from sklearn.metrics import adjusted_rand_score
from tokenizers import Tokenizer, models, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from trl_lead import clustering, kmeans
from trl_lead.cache import cached, dataset_fingerprint, model_fingerprint
from trl_lead.clustering import compute_clusters, plot_clusters_2d
from trl_lead.kmeans import cluster_embeddings
from trl_lead.scoring import answer_losses, embed, ifd_scores, sample_texts

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

# Asserts on trained models, statistics over seeds or float results: also run under the second kernels (README "Tests")
pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The models here are tiny: one thread is as fast, and far faster when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def char_tokenizer():
    vocab = {t: i for i, t in enumerate(SPECIAL + [c for c in string.printable if c not in SPECIAL])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))  # char level: no merges
    tok.add_special_tokens(SPECIAL)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    t = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    t.chat_template = CHAT_TEMPLATE
    return t


def tiny_llama(char_tokenizer, seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(char_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=char_tokenizer.pad_token_id,
        bos_token_id=char_tokenizer.bos_token_id,
        eos_token_id=char_tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def model(char_tokenizer):
    return tiny_llama(char_tokenizer)


def conversational_rows(n=12, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a, b = int(rng.integers(0, 10 ** int(rng.integers(1, 5)))), int(rng.integers(0, 100))
        messages = [{"role": "user", "content": f"add {a} and {b}" + " please" * int(rng.integers(0, 3))}]
        if i % 3 == 0:
            messages = [{"role": "system", "content": "be brief"}, *messages]
        if i % 4 == 1:  # multi-turn: the instruction is everything before the last assistant turn
            messages += [{"role": "assistant", "content": "which?"}, {"role": "user", "content": "both"}]
        messages.append({"role": "assistant", "content": f"{a + b}" + "!" * int(rng.integers(0, 6))})
        rows.append({"messages": messages})
    return rows


def prompt_completion_rows(n=6):
    return [
        {"prompt": f"Reverse {'abcdefgh'[: i + 2]}:", "completion": " " + "abcdefgh"[: i + 2][::-1]} for i in range(n)
    ]


class ForwardCounter:
    def __init__(self, model):
        self.calls = 0
        model.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.calls += 1


# ---------------------------------------------------------------------------------------------------------------------
# clustering
# ---------------------------------------------------------------------------------------------------------------------


def planted_blobs(n=2000, d=384, k=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)).astype(np.float32)
    y = rng.integers(0, k, n)
    return centers[y] + rng.standard_normal((n, d), dtype=np.float32), y


@pytest.mark.parametrize("method", ["kmeans", "pca-kmeans", "umap-kmeans"])
def test_planted_clusters_are_recovered(method):
    x, y = planted_blobs()
    # umap_fit_size below N: fitted on 1000 rows, the other 1000 placed by UMAP.transform
    labels = cluster_embeddings(x, 8, method=method, seed=0, umap_fit_size=1000, show_progress=False)
    assert labels.shape == (2000,) and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < 8
    assert adjusted_rand_score(y, labels) > 0.9


def test_minibatch_kmeans_path_recovers_blobs(monkeypatch):
    monkeypatch.setattr(kmeans, "KMEANS_FULL_MAX_ELEMENTS", 0)  # force MiniBatchKMeans
    x, y = planted_blobs(n=3000)
    assert adjusted_rand_score(y, cluster_embeddings(x, 8, seed=1)) > 0.9


def test_one_dimensional_scores_accepted_and_ordered():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(c, 0.05, 200) for c in (2.0, 0.5, 1.2)])
    a = cluster_embeddings(scores, 3)
    b = cluster_embeddings(scores.reshape(-1, 1), 3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, cluster_embeddings(scores, 3, seed=None))  # None means 0
    # label 0 = lowest scores
    np.testing.assert_array_equal(a, np.repeat([2, 0, 1], 200))


def test_k_equal_one_and_k_equal_n():
    x, _ = planted_blobs(n=10, d=4)
    assert (cluster_embeddings(x, 1) == 0).all()
    assert sorted(cluster_embeddings(x, 10)) == list(range(10))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"x": np.zeros((5, 3)), "k": 6}, r"`k`=6 is larger than the number of samples \(5\)"),
        ({"x": np.zeros((5, 3)), "k": 0}, r"`k` must be at least 1"),
        ({"x": np.zeros((5, 3)), "k": 2.5}, r"`k` must be an int"),
        ({"x": np.array([[0.0, np.nan], [1, 2]]), "k": 1}, r"`x` holds NaN or inf .* row 0"),
        ({"x": np.array([1.0, 2.0, np.inf]), "k": 1}, r"`x` holds NaN or inf .* row 2"),
        ({"x": np.zeros((0, 384)), "k": 1}, r"`x` is empty"),
        ({"x": [], "k": 1}, r"`x` is empty"),
        ({"x": np.zeros((5, 3)), "k": 2, "method": "dbscan"}, r"`method`='dbscan' is unknown; use one of"),
        ({"x": np.zeros((2, 2, 2)), "k": 1}, r"`x` must have shape"),
        ({"x": np.zeros((5, 3)), "k": 2, "seed": -1}, r"`seed` must be a non-negative int"),
    ],
)
def test_bad_cluster_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cluster_embeddings(**kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# IFD
# ---------------------------------------------------------------------------------------------------------------------


def manual_mean_ce(model, ids, start):
    """Mean CE of ids[start:] given ids[:start], one unpadded sequence, computed by hand from the logits."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = logits.log_softmax(-1)
    return -float(np.mean([logp[j - 1, ids[j]].item() for j in range(start, len(ids))]))


def test_ifd_matches_independent_computation(model, char_tokenizer):
    rows = conversational_rows(4) + prompt_completion_rows(3)
    ifd = ifd_scores(model, char_tokenizer, rows, batch_size=3, show_progress=False)
    cond = answer_losses(model, char_tokenizer, rows, batch_size=3, show_progress=False)
    bos = char_tokenizer.bos_token_id
    for i, row in enumerate(rows):
        if "messages" in row:
            last = row["messages"][-1]["content"]
            text = char_tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
            instruction = char_tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            last = row["completion"]
            instruction = char_tokenizer(row["prompt"])["input_ids"]
            assert instruction[0] == bos
        answer = char_tokenizer(last, add_special_tokens=False)["input_ids"]
        assert len(answer) == len(last)  # char-level char_tokenizer
        conditional = manual_mean_ce(model, instruction + answer, len(instruction))
        alone = manual_mean_ce(model, [bos] + answer, 1)
        assert math.isclose(cond[i], conditional, abs_tol=1e-5)
        assert math.isclose(ifd[i], conditional / alone, abs_tol=1e-5)


def test_losses_do_not_depend_on_batch_composition(model, char_tokenizer):
    rows = conversational_rows(16, seed=3)
    one = answer_losses(model, char_tokenizer, rows, batch_size=1, show_progress=False)
    eight = answer_losses(model, char_tokenizer, rows, batch_size=8, show_progress=False)
    np.testing.assert_allclose(one, eight, rtol=0, atol=1e-5)
    # same sample in a different batch: the first 8 rows alone vs within all 16
    np.testing.assert_allclose(
        answer_losses(model, char_tokenizer, rows[:8], batch_size=8, show_progress=False), eight[:8], rtol=0, atol=1e-5
    )
    np.testing.assert_allclose(
        ifd_scores(model, char_tokenizer, rows, batch_size=1, show_progress=False),
        ifd_scores(model, char_tokenizer, rows, batch_size=8, show_progress=False),
        rtol=0,
        atol=1e-5,
    )


def test_ifd_reuses_given_conditional_losses(model, char_tokenizer):
    rows = conversational_rows(8)
    full = ifd_scores(model, char_tokenizer, rows, batch_size=4, show_progress=False)
    cond = answer_losses(model, char_tokenizer, rows, batch_size=4, show_progress=False)
    counter = ForwardCounter(model)
    reused = ifd_scores(model, char_tokenizer, rows, batch_size=4, show_progress=False, conditional_losses=cond)
    assert counter.calls == 2  # only the "answer alone" half: 8 rows / 4 per batch
    np.testing.assert_allclose(reused, full, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="`conditional_losses` has 3 values but the dataset has 8 rows"):
        ifd_scores(model, char_tokenizer, rows, conditional_losses=cond[:3])


def test_scoring_restores_training_mode_and_truncates(model, char_tokenizer):
    rows = conversational_rows(5)
    model.train()
    losses = answer_losses(model, char_tokenizer, rows, max_length=12, show_progress=False)
    assert model.training
    assert np.isfinite(losses).all()
    # max_length=12 keeps at most 11 answer tokens and the end of the instruction
    row = rows[0]
    text = char_tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
    instruction = char_tokenizer(text, add_special_tokens=False)["input_ids"]
    answer = char_tokenizer(row["messages"][-1]["content"], add_special_tokens=False)["input_ids"][:11]
    ids = instruction[-(12 - len(answer)) :] + answer
    model.eval()
    assert math.isclose(losses[0], manual_mean_ce(model, ids, 12 - len(answer)), abs_tol=1e-5)


@pytest.mark.parametrize(
    "bad_row, match",
    [
        (
            {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}]},
            "instruction is empty",
        ),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "instruction is empty"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}, "answer is empty"),
        ({"messages": [{"role": "user", "content": "q"}]}, "has no assistant turn"),
        ({"prompt": "", "completion": "x"}, r"instruction is empty \(`prompt` has no text\)"),
        ({"prompt": "q", "completion": " "}, r"answer is empty \(`completion` has no text\)"),
        ({"question": "q"}, "neither a `messages` column nor `prompt` and `completion`"),
    ],
)
def test_empty_instruction_or_answer_names_the_row(model, char_tokenizer, bad_row, match):
    rows = conversational_rows(2) + [bad_row]
    with pytest.raises(ValueError, match=f"Row 2.*{match}"):
        ifd_scores(model, char_tokenizer, rows, show_progress=False)


# ---------------------------------------------------------------------------------------------------------------------
# embeddings
# ---------------------------------------------------------------------------------------------------------------------


def test_embed_mean_pools_and_ignores_padding(model, char_tokenizer):
    texts = ["short", "a much longer text than the others", "mid length text"]
    e1 = embed(texts, model, char_tokenizer, batch_size=1, show_progress=False)
    e3 = embed(texts, model, char_tokenizer, batch_size=3, show_progress=False)
    assert e1.shape == (3, 32) and e1.dtype == np.float32
    np.testing.assert_allclose(e1, e3, rtol=0, atol=1e-5)
    # by hand: mean of the final (normed) hidden states of the unpadded text
    with torch.no_grad():
        ids = torch.tensor([char_tokenizer(texts[1])["input_ids"]])
        hidden = model.model(input_ids=ids).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(e1[1], hidden, rtol=0, atol=1e-5)
    normed = embed(texts, model, char_tokenizer, normalize=True, show_progress=False)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="`model` is required"):
        embed(texts)


def test_sample_texts_formats():
    rows = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"prompt": "p", "completion": "c"},
        {"text": "t"},
    ]
    assert sample_texts(rows) == ["q\na", "p\nc", "t"]


def test_compute_clusters_embedding(model, char_tokenizer, tmp_path):
    rows = conversational_rows(20)
    labels, features = compute_clusters(
        model,
        char_tokenizer,
        rows,
        how="embedding",
        k=3,
        method="pca-kmeans",
        cache_dir=tmp_path,
        show_progress=False,
        return_features=True,
    )
    assert labels.shape == (20,) and set(labels) <= {0, 1, 2}
    assert features.shape == (20, 32)
    counter = ForwardCounter(model)
    again = compute_clusters(
        model, char_tokenizer, rows, how="embedding", k=3, method="pca-kmeans", cache_dir=tmp_path, show_progress=False
    )
    np.testing.assert_array_equal(labels, again)
    assert counter.calls == 0


def test_prompt_groups_group_samples_by_their_prompt_alone(model, char_tokenizer, tmp_path, monkeypatch):
    real = clustering.cluster_embeddings
    # Four prompts, each answered three times with different answers (right and wrong ones, as a bad source would):
    # with k = 4 groups (12 samples, 3 per group) every group is one prompt, whatever the answers
    prompts = ["sort: 8460", "upper: rj", "copy: xyz", "add 17 and 25"]
    answers = ["0468", "RJ", "42", "zzz", "xyz", "7"]
    input_ids, labels, prompt_of = [], [], []
    for p, prompt in enumerate(prompts):
        for a in range(3):
            prompt_ids = char_tokenizer(prompt)["input_ids"]
            answer_ids = char_tokenizer(answers[(p + 2 * a) % len(answers)], add_special_tokens=False)["input_ids"]
            input_ids.append(prompt_ids + answer_ids)
            labels.append([-100] * len(prompt_ids) + answer_ids)
            prompt_of.append(p)
    order = np.random.default_rng(0).permutation(len(input_ids))  # groups do not depend on the pool's order
    input_ids, labels, prompt_of = [input_ids[i] for i in order], [labels[i] for i in order], np.take(prompt_of, order)
    common = dict(group_size=3, cache_dir=tmp_path, show_progress=False)
    clustered = []
    monkeypatch.setattr(clustering, "cluster_embeddings", lambda x, *a, **k: clustered.append(x) or real(x, *a, **k))
    groups = clustering.prompt_groups(model, char_tokenizer, input_ids, labels, **common)
    assert groups.shape == (12,) and adjusted_rand_score(prompt_of, groups) == 1.0
    # what k-means saw: the normalised mean hidden state over each prompt's tokens alone (an independent embed call)
    expected = embed([prompts[p] for p in prompt_of], model, char_tokenizer, normalize=True, show_progress=False)
    np.testing.assert_allclose(clustered[0], expected, rtol=0, atol=1e-5)
    # from the cache: no forward pass
    counter = ForwardCounter(model)
    np.testing.assert_array_equal(clustering.prompt_groups(model, char_tokenizer, input_ids, labels, **common), groups)
    assert counter.calls == 0
    # group_size 12: one group; a sample without prompt is refused, naming the setting to change
    assert set(clustering.prompt_groups(model, char_tokenizer, input_ids, labels, 12, use_cache=False,
                                        show_progress=False)) == {0}  # fmt: skip
    labels[5] = list(input_ids[5])
    with pytest.raises(ValueError, match="Sample 5 has no prompt.*lead_filter_groups='clusters'"):
        clustering.prompt_groups(model, char_tokenizer, input_ids, labels, **common)


# ---------------------------------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------------------------------


def test_cache_hits_on_repeat_and_misses_on_changes(char_tokenizer, tmp_path):
    model = tiny_llama(char_tokenizer)
    rows = conversational_rows(12)
    dataset = Dataset.from_list(rows)
    counter = ForwardCounter(model)

    def run(m, data, **kw):
        counter.calls = 0
        kw = {"k": 3, "batch_size": 4, "cache_dir": tmp_path, "show_progress": False} | kw
        return compute_clusters(m, char_tokenizer, data, how="ifd", **kw)

    first = run(model, dataset)
    assert counter.calls == 6  # 12 rows / 4 per batch, two halves
    assert first.shape == (12,) and set(first) <= {0, 1, 2}
    np.testing.assert_array_equal(run(model, dataset), first)
    assert counter.calls == 0  # repeat: hit
    run(model, Dataset.from_list(rows))
    assert counter.calls == 0  # identical data rebuilt: same fingerprint, hit
    run(model, dataset, k=4)
    assert counter.calls == 0  # other k: the IFD scores are reused, only k-means runs

    changed = [dict(r) for r in rows]
    changed[5] = {"messages": [*rows[5]["messages"][:-1], {"role": "assistant", "content": "42"}]}
    run(model, Dataset.from_list(changed))
    assert counter.calls == 6  # a changed row: miss
    run(model, changed)
    assert counter.calls == 6  # a plain list is hashed by content: miss the first time...
    run(model, changed)
    assert counter.calls == 0  # ...hit the second

    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 7] += 1e-3
    run(model, dataset)
    assert counter.calls == 6  # a changed weight: miss
    run(model, dataset)
    assert counter.calls == 0

    run(model, dataset, use_cache=False)
    assert counter.calls == 6
    assert not list(tmp_path.rglob("*.tmp"))  # written temp-then-rename, nothing left over


def test_cache_dir_from_env_and_atomic_write(tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_LEAD_CACHE", str(tmp_path / "env"))
    calls = []

    def compute():
        calls.append(1)
        return np.arange(5.0)

    a = cached("thing", {"a": 1, "arr": np.ones(3)}, compute)
    b = cached("thing", {"arr": np.ones(3), "a": 1}, compute)  # same parts, other order
    np.testing.assert_array_equal(a, b)
    assert len(calls) == 1
    cached("thing", {"a": 1, "arr": np.ones(3) * 2}, compute)
    assert len(calls) == 2
    files = sorted(p.name for p in (tmp_path / "env" / "thing").iterdir())
    assert len(files) == 2 and all(f.endswith(".npy") for f in files)
    cached("thing", {"a": 1}, compute, cache_dir=tmp_path / "arg")
    assert (tmp_path / "arg" / "thing").is_dir()
    # a corrupt entry is recomputed, not trusted
    for path in (tmp_path / "arg" / "thing").iterdir():
        path.write_bytes(b"garbage")
    np.testing.assert_array_equal(cached("thing", {"a": 1}, compute, cache_dir=tmp_path / "arg"), np.arange(5.0))
    assert len(calls) == 4


def test_fingerprints(char_tokenizer):
    m1, m2 = tiny_llama(char_tokenizer, seed=0), tiny_llama(char_tokenizer, seed=0)
    assert model_fingerprint(m1) == model_fingerprint(m2)
    with torch.no_grad():
        m2.lm_head.weight[0, 0] += 1e-6
    assert model_fingerprint(m1) != model_fingerprint(m2)
    # large tensors: strided sample + float64 sum still see a single changed weight
    big = torch.nn.Linear(2048, 1024, bias=False)
    fp = model_fingerprint(big, full_max_numel=1024)
    with torch.no_grad():
        big.weight[5, 3] += 0.01
    assert model_fingerprint(big, full_max_numel=1024) != fp
    rows = prompt_completion_rows(3)
    assert dataset_fingerprint(rows) == dataset_fingerprint([dict(r) for r in rows])
    assert dataset_fingerprint(rows) != dataset_fingerprint(rows[:2] + [{"prompt": "x", "completion": "y"}])


def test_compute_clusters_bad_inputs(model, char_tokenizer, tmp_path):
    rows = conversational_rows(4)
    with pytest.raises(ValueError, match=r"`k`=5 is larger than the number of samples \(4\)"):
        compute_clusters(model, char_tokenizer, rows, k=5, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="`how`='tfidf' is unknown"):
        compute_clusters(model, char_tokenizer, rows, how="tfidf", k=2, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="IFD scores are 1-D"):
        compute_clusters(model, char_tokenizer, rows, k=2, method="umap-kmeans", cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # validated before any work


# ---------------------------------------------------------------------------------------------------------------------
# plot
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(300,), (300, 2), (8, 16)])
def test_plot_clusters_2d_writes_png(tmp_path, shape):
    """The PNG shows every cluster in its own colour: each cluster's colour (tab10, drawn opaque in the histogram,
    at alpha 0.6 over white in the scatter plots) covers pixels of the decoded image. Catches one colour for all
    points, clusters left out, and a blank or unrelated image."""
    from matplotlib import colormaps
    from matplotlib.image import imread

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    labels = rng.integers(0, 3, shape[0])
    path = plot_clusters_2d(x, labels, tmp_path / "sub" / "clusters.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["clusters.png"]
    pixels = imread(path)[..., :3]
    for c in range(3):
        color = np.array(colormaps["tab10"](c)[:3])
        drawn = color if len(shape) == 1 else 0.6 * color + 0.4  # alpha 0.6 over the white background
        near = np.abs(pixels - drawn).max(axis=-1) < 0.03
        assert near.sum() >= 10, (c, near.sum())  # measured >= 71 (8 points), >= 156 (300), ~20000 (histogram)
    assert not (np.abs(pixels - np.array(colormaps["tab10"](3)[:3])).max(axis=-1) < 0.03).any()  # no 4th cluster


# ---------------------------------------------------------------------------------------------------------------------
# with the project's embedded default (conftest fixtures: its tokenizer, pool and tiny model)
# ---------------------------------------------------------------------------------------------------------------------


def test_compute_clusters_on_embedded_pool(tokenizer, pool, make_model, tmp_path):
    model = make_model()
    labels, scores = compute_clusters(
        model, tokenizer, pool, how="ifd", k=7, cache_dir=tmp_path, show_progress=False, return_features=True
    )
    assert labels.shape == (len(pool),) and labels.min() >= 0 and labels.max() < 7
    assert scores.shape == (len(pool),) and np.isfinite(scores).all() and (scores > 0).all()
    # labels are numbered by increasing IFD
    centers = [scores[labels == c].mean() for c in range(7) if (labels == c).any()]
    assert centers == sorted(centers)
    emb = compute_clusters(model, tokenizer, pool, how="embedding", k=4, cache_dir=tmp_path, show_progress=False)
    assert emb.shape == (len(pool),) and set(emb) <= set(range(4))


def test_append_eos_scores_the_tokens_sft_trains_on(tokenizer, pool, make_model):
    """With the embedded template (`...<|assistant|>answer<eos>`), append_eos=True scores exactly the assistant
    tokens of the full rendered conversation, i.e. what SFTTrainer's assistant-only loss trains on."""
    model = make_model()
    rows = pool.select(range(6))
    losses = answer_losses(model, tokenizer, rows, batch_size=4, show_progress=False, append_eos=True)
    for i, row in enumerate(rows):
        full = tokenizer(tokenizer.apply_chat_template(row["messages"], tokenize=False), add_special_tokens=False)
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = full["input_ids"]
        assert ids[: len(prompt_ids)] == prompt_ids and ids[-1] == tokenizer.eos_token_id
        assert math.isclose(losses[i], manual_mean_ce(model, ids, len(prompt_ids)), abs_tol=1e-5)
    plain = answer_losses(model, tokenizer, rows, batch_size=4, show_progress=False)
    assert not np.allclose(plain, losses)


@pytest.mark.parametrize("exact_max", [10_000, 100])
def test_embedding_groups_find_the_prompt_kinds_exactly_and_inside_cells(exact_max):
    # 40 kinds of prompt, 50 samples each on average, far apart: groups of 50 are the kinds, whether found by one
    # k-means (exact_max above N) or inside coarse cells after PCA (below)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 64)).astype(np.float32) * 3
    kinds = rng.integers(0, 40, 2000)
    x = centres[kinds] + 0.3 * rng.normal(size=(2000, 64)).astype(np.float32)
    groups = clustering.embedding_groups(x, group_size=50, seed=0, exact_max=exact_max)
    assert groups.shape == (2000,) and len(np.unique(groups)) == 40
    assert adjusted_rand_score(kinds, groups) == 1.0


def test_embedding_groups_mend_the_kinds_that_coarse_cells_cut():
    # 187 kinds of 128-wide embeddings, 32 samples each on average, noisy enough (0.8 per coordinate) that the coarse
    # cells of the large-N path cut most kinds: the cells' own k-means alone reach an adjusted Rand index of 0.87;
    # the passes over the groups of each sample's nearest cells mend it to 0.97 (the exact k-means above exact_max)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(187, 128)).astype(np.float32)
    kinds = rng.integers(0, 187, 6000)
    x = centres[kinds] + 0.8 * rng.normal(size=(6000, 128)).astype(np.float32)
    groups = clustering.embedding_groups(x, group_size=32, seed=0, exact_max=1000)
    sizes = np.bincount(groups)
    assert groups.shape == (6000,) and groups.dtype == np.int64 and (sizes > 0).all()  # labels 0..groups-1
    assert 28 <= np.median(sizes) <= 36 and 160 <= len(sizes) <= 200
    assert adjusted_rand_score(kinds, groups) > 0.94
    assert np.array_equal(groups, clustering.embedding_groups(x, group_size=32, seed=0, exact_max=1000))
