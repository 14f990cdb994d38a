import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_similarity

from alice import clustering
from alice.clustering import Clustering, cluster_by_answer, cluster_by_embedding, cluster_by_key, greedy_clusters


# ---- the seed's procedures, kept as references ---------------------------------------------------------

def seed_embedding_clustering(responses, embeddings, threshold=0.9):
    """The seed's `clustering`: every pass "re-encodes" the remaining responses (here: looks up their vectors)
    and compares them with the first remaining one."""
    clustered = []
    temp = list(range(len(responses)))  # indices instead of strings, so duplicates stay distinguishable
    while len(temp) > 0:
        head = temp[0]
        similar = cosine_similarity(embeddings[temp], embeddings[[head]]) > threshold
        size = int(similar.sum())
        if size == 1:
            temp = temp[1:]
            continue
        clustered.append({"response": responses[head], "size": size})
        fetch = (similar == False).nonzero()[0]  # noqa: E712 (as the seed)
        if len(fetch) == 0:
            break
        temp = [temp[i] for i in fetch]
    return clustered


def seed_answer_clustering(responses, keys):
    """The seed's `clustering_on_answer`, with the extraction given as ``keys`` (None = unreadable)."""
    clustered = []
    temp = list(range(len(responses)))
    while len(temp) > 0:
        head = temp[0]
        if keys[head] is None:
            temp = temp[1:]
            continue
        a = np.array([keys[i] if keys[i] is not None else "N/A" for i in temp])
        similar = a == keys[head]
        size = int(similar.sum())
        if size == 1:
            temp = temp[1:]
            continue
        clustered.append({"response": responses[head], "size": size})
        fetch = (similar == False).nonzero()[0]  # noqa: E712
        if len(fetch) == 0:
            break
        temp = [temp[i] for i in fetch]
    return clustered


def seed_final(clustered):
    s = sorted(clustered, key=lambda x: x["size"], reverse=True)
    return s[0]["response"] if s else None


def _strip(c: Clustering):
    return [{"response": x["response"], "size": x["size"]} for x in c.clusters]


# ---- equivalence with the seed ------------------------------------------------------------------------

def _random_case(rng):
    """Embeddings around a few centres with mixed spread, with exact duplicates and near-threshold pairs."""
    n = int(rng.integers(1, 60))
    dim = int(rng.choice([4, 8, 32]))
    k = int(rng.integers(1, 6))
    centres = rng.normal(size=(k, dim))
    spread = rng.choice([0.05, 0.2, 0.4, 1.0], size=k)
    lab = rng.integers(0, k, size=n)
    emb = centres[lab] + rng.normal(size=(n, dim)) * spread[lab, None]
    dup = rng.random(n) < 0.2  # exact duplicates of an earlier response (ties)
    for i in np.flatnonzero(dup):
        if i:
            emb[i] = emb[rng.integers(0, i)]
    return emb.astype(np.float32)


def test_encode_once_equals_seed_reencoding_on_random_embeddings():
    rng = np.random.default_rng(0)
    formed = 0
    for case in range(400):
        emb = _random_case(rng)
        threshold = float(rng.choice([0.9, 0.5, 0.95, 0.0]))
        responses = [f"r{i}" for i in range(len(emb))]
        ours = cluster_by_embedding(responses, emb, threshold)
        ref = seed_embedding_clustering(responses, emb, threshold)
        assert _strip(ours) == ref, f"case {case}"
        assert ours.final_response == seed_final(ref)
        # every response is a cluster member or a singleton, exactly once
        members = [m for c in ours.clusters for m in c["members"]]
        assert len(members) == len(set(members))
        assert len(members) + ours.singletons == len(emb)
        formed += len(ours.clusters)
    assert formed > 100  # the cases do form clusters


def test_answer_clustering_equals_seed():
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        keys = [None if rng.random() < 0.2 else str(int(rng.integers(0, 5))) for _ in range(n)]
        responses = [f"r{i}" for i in range(n)]
        ours = cluster_by_key(responses, keys)
        ref = seed_answer_clustering(responses, keys)
        assert _strip(ours) == ref
        assert ours.final_response == seed_final(ref)
        assert ours.unreadable == sum(k is None for k in keys)
        assert ours.unreadable + ours.singletons + sum(c["size"] for c in ours.clusters) == n


# ---- crafted cases ------------------------------------------------------------------------------------

def test_gsm8k_clusters_by_extracted_number():
    responses = [
        "so 3 + 3 = 6\n#### 6",
        "I cannot tell",  # unreadable: never clusters
        "total is $6.00\n#### 6.00",  # same number, other spelling
        "2 * 4 = 8\n#### 8",
        "#### 8",
        "#### 7",  # singleton
        "no answer here either",
    ]
    c = cluster_by_answer("gsm8k", "q", responses)
    assert c.clusters == [
        {"response": responses[0], "size": 2, "members": [0, 2]},
        {"response": responses[3], "size": 2, "members": [3, 4]},
    ]
    assert (c.singletons, c.unreadable) == (1, 2)
    assert c.final_response == responses[0]  # tie: the first cluster


def test_arc_clusters_by_choice_and_largest_wins():
    q = "Which?\nA. red\nB. blue\nC. green"
    responses = ["My choice is B.", "because... My choice is A.", "My choice is A", "My choice is A.", "hmm"]
    c = cluster_by_answer("arc_challenge", q, responses)
    assert [(x["response"], x["size"]) for x in c.clusters] == [(responses[1], 3)]
    assert c.final_response == responses[1]
    assert (c.singletons, c.unreadable) == (1, 1)


def test_all_unreadable_or_all_distinct_has_no_final_response():
    assert cluster_by_answer("gsm8k", "q", ["x", "y"]).final_response is None
    c = cluster_by_answer("gsm8k", "q", ["#### 1", "#### 2", "#### 3"])
    assert c.clusters == [] and c.singletons == 3 and c.final_response is None
    assert cluster_by_key([], []).clusters == []


def test_embedding_threshold_is_strict_and_head_is_representative():
    emb = np.array([[1.0, 0.0], [0.9, np.sqrt(1 - 0.81)], [1.0, 0.0], [0.0, 1.0]])
    # sim(0,1) = 0.9 exactly: not > 0.9
    c = cluster_by_embedding(["a", "b", "a2", "c"], emb, 0.9)
    assert c.clusters == [{"response": "a", "size": 2, "members": [0, 2]}]
    assert c.singletons == 2
    c = cluster_by_embedding(["a", "b", "a2", "c"], emb, 0.89)
    assert c.clusters == [{"response": "a", "size": 3, "members": [0, 1, 2]}]


def test_greedy_keeps_head_in_its_own_cluster_even_if_relation_says_otherwise():
    linked = np.zeros((3, 3), dtype=bool)
    linked[0, 2] = True
    groups, singletons, skipped = greedy_clusters(linked)
    assert groups == [[0, 2]] and singletons == 1 and skipped == 0


def test_cluster_question_dispatch():
    calls = []

    def encode(question, responses):
        calls.append((question, list(responses)))
        return np.array([[1.0, 0.0] if "paris" in r.lower() else [0.0, 1.0] for r in responses])

    rs = ["Paris.", "It is Paris", "Lyon", "Rome"]
    c = clustering.cluster_question("hotpotqa", "capital?", rs, encode)
    assert calls == [("capital?", rs)]  # encoded once, all responses in one call
    assert c.clusters[0]["members"] == [0, 1] and c.final_response == "Paris."
    assert c.clusters[1]["members"] == [2, 3]
    with pytest.raises(ValueError):
        clustering.cluster_question("triviaqa", "q", rs)
    assert clustering.cluster_question("gsm8k", "q", ["#### 1", "#### 1"]).final_response == "#### 1"


def test_embedder_instruction_modes():
    assert not clustering.Embedder("sentence-transformers/all-MiniLM-L6-v2").use_instruction
    assert clustering.Embedder("hkunlp/instructor-large").use_instruction
    assert clustering.Embedder("x/y", instruction="on").use_instruction
    with pytest.raises(ValueError):
        clustering.Embedder("x/y", instruction="maybe")


MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _minilm_or_skip():
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(MINILM, "config.json"), str):
        pytest.skip("all-MiniLM-L6-v2 is not in the HF cache")


def test_instruction_is_a_prompt_left_out_of_the_pooling():
    """With the instruction on (as for instructor-large), each response is encoded after the instruction but the
    vector averages the response's tokens only; checked against a plain transformers forward pass."""
    _minilm_or_skip()
    import torch
    from transformers import AutoModel, AutoTokenizer

    from alice.prompts import EMBEDDING_INSTRUCTION

    q, responses = "Who wrote Hamlet?", ["William Shakespeare wrote it.", "Christopher Marlowe"]
    on = clustering.Embedder(MINILM, instruction="on", device="cpu").encode(q, responses)
    off = clustering.Embedder(MINILM, instruction="off", device="cpu").encode(q, responses)

    tok, model = AutoTokenizer.from_pretrained(MINILM), AutoModel.from_pretrained(MINILM).eval()
    prompt = EMBEDDING_INSTRUCTION.format(question=q)
    n_prompt = len(tok(prompt)["input_ids"]) - 1  # [CLS] + the prompt's tokens, without its [SEP]
    for i, r in enumerate(responses):
        enc = tok(prompt + r, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0]
        want = h[n_prompt:].mean(0)  # the response's tokens (and [SEP]) only
        want = (want / want.norm()).numpy()
        assert np.allclose(on[i], want, atol=1e-5)
        pooled_all = h.mean(0)
        pooled_all = (pooled_all / pooled_all.norm()).numpy()
        assert not np.allclose(on[i], pooled_all, atol=1e-3)  # not the prompt averaged in
        assert not np.allclose(on[i], off[i], atol=1e-3)  # the instruction does condition the tokens
