"""Clustering a teacher's N sampled answers to one question (Alice step 4a).

The paper's greedy procedure, on a "same answer" relation between responses:

    repeat while responses remain:
        head    = the first remaining response
        cluster = every remaining response linked to head (head itself included)
        size 1  -> head is a singleton: drop head only
        else    -> record {response: head, size} and drop the whole cluster
    final response = the representative of the largest cluster (the first one on ties)

Which relation a dataset uses is its spec's ``answer_key`` (``alice.data``):

- with one (gsm8k / arc_challenge): linked = same extracted final answer; an unreadable
  answer never forms or joins a cluster (the seed dropped it when it came up as head).
  ``seed_exact``: the seed's raw key (the text after the first ``#### `` / ``My choice is ``, stripped) and its rule
  for an unreadable answer: dropped as head, and compared as the string ``'N/A'`` otherwise.
- without (hotpotqa / triviaqa): linked = cosine similarity of sentence embeddings > threshold (0.9). The seed re-encoded
  every remaining response on each pass (O(N^2) encodes); here each response is encoded once and the greedy
  procedure runs on the similarity matrix, which gives the same clusters (tests/test_clustering.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import data as data_mod
from . import registry
from .errors import AliceError
from .grading import extract_final_answer
from .options import DEFAULT_THRESHOLD
from .prompts import EMBEDDING_INSTRUCTION

# The paper used hkunlp/instructor-large (INSTRUCTOR package), which recent sentence-transformers cannot load.
# all-MiniLM-L6-v2 loads everywhere (and is in the offline cache); see README ("Alice", embeddings).
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
INSTRUCTION_MODES = ("auto", "on", "off")
# --seed-exact: the seed's embedder for hotpotqa/triviaqa, with its instruction (prompts.EMBEDDING_INSTRUCTION)
SEED_EMBEDDING_MODEL = "hkunlp/instructor-large"
SEED_UNREADABLE = "N/A"  # the seed's stand-in for a response without a readable answer (it can match a head's key)


class EmbedderError(AliceError):
    """An embedding model that cannot be loaded; the message says what to do."""


@dataclass
class Clustering:
    """The clusters of one question's samples. ``members`` index into the sampled responses."""

    clusters: list[dict] = field(default_factory=list)  # [{response, size, members}]
    singletons: int = 0
    unreadable: int = 0  # answer clustering: responses with no readable final answer

    @property
    def final_response(self) -> str | None:
        """The largest cluster's representative (first on ties, as the seed's stable sort); None when no cluster."""
        if not self.clusters:
            return None
        best = max(range(len(self.clusters)), key=lambda i: (self.clusters[i]["size"], -i))
        return self.clusters[best]["response"]


def greedy_clusters(linked: np.ndarray, eligible: np.ndarray | None = None,
                    joinable: np.ndarray | None = None) -> tuple[list[list[int]], int, int]:
    """The greedy procedure on an n x n boolean relation ``linked[head, j]``.

    Returns (clusters as lists of member indices, head first; number of singletons; number of ineligible
    responses). An ineligible response (``eligible[i]`` False) is dropped when it comes up as head and joins no
    cluster unless ``joinable`` (default: ``eligible``) says it may.
    """
    linked = np.asarray(linked, dtype=bool)
    n = linked.shape[0]
    eligible = np.ones(n, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    joinable = eligible if joinable is None else np.asarray(joinable, dtype=bool)
    alive = np.ones(n, dtype=bool)
    clusters: list[list[int]] = []
    singletons = skipped = 0
    # "the first remaining response" is the smallest index still alive
    for head in range(n):
        if not alive[head]:
            continue
        if not eligible[head]:
            alive[head] = False
            skipped += 1
            continue
        mask = alive & linked[head] & joinable
        mask[head] = True  # a response is always in its own cluster
        members = np.flatnonzero(mask)
        if len(members) == 1:
            alive[head] = False
            singletons += 1
            continue
        clusters.append([int(i) for i in members])
        alive[members] = False
    return clusters, singletons, skipped


def _result(responses: Sequence[str], groups: list[list[int]], singletons: int, unreadable: int = 0) -> Clustering:
    return Clustering(
        clusters=[{"response": responses[g[0]], "size": len(g), "members": g} for g in groups],
        singletons=singletons,
        unreadable=unreadable,
    )


def cosine_matrix(embeddings: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarities of the rows of ``embeddings``."""
    e = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    e = e / np.where(norms == 0, 1.0, norms)
    return e @ e.T


def cluster_by_embedding(responses: Sequence[str], embeddings: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> Clustering:
    """Clusters of responses whose embeddings have cosine similarity > ``threshold`` to the cluster's head."""
    if len(responses) != len(embeddings):
        raise ValueError(f"{len(responses)} responses but {len(embeddings)} embeddings")
    if not len(responses):
        return Clustering()
    groups, singletons, _ = greedy_clusters(cosine_matrix(embeddings) > threshold)
    return _result(responses, groups, singletons)


def cluster_by_key(responses: Sequence[str], keys: Sequence[str | None]) -> Clustering:
    """Clusters of responses with the same key (e.g. the extracted final answer); a None key never clusters."""
    if len(responses) != len(keys):
        raise ValueError(f"{len(responses)} responses but {len(keys)} keys")
    if not len(responses):
        return Clustering()
    codes = {}
    ids = np.array([-1 if k is None else codes.setdefault(k, len(codes)) for k in keys])
    eligible = ids >= 0
    groups, singletons, unreadable = greedy_clusters(ids[:, None] == ids[None, :], eligible)
    return _result(responses, groups, singletons, unreadable)


def cluster_by_seed_key(responses: Sequence[str], keys: Sequence[str | None]) -> Clustering:
    """The seed's answer clustering: a None key is dropped when it comes up as head; elsewhere it is compared as
    ``'N/A'`` (so it joins a head whose raw key is the text ``N/A``)."""
    if len(responses) != len(keys):
        raise ValueError(f"{len(responses)} responses but {len(keys)} keys")
    if not len(responses):
        return Clustering()
    codes = {}
    ids = np.array([codes.setdefault(SEED_UNREADABLE if k is None else k, len(codes)) for k in keys])
    heads = np.array([k is not None for k in keys])
    groups, singletons, unreadable = greedy_clusters(ids[:, None] == ids[None, :], heads, np.ones(len(keys), bool))
    return _result(responses, groups, singletons, unreadable)


def cluster_by_answer(data: str, question: str, responses: Sequence[str], seed_exact: bool = False) -> Clustering:
    """A dataset with an answer extractor (gsm8k / arc_challenge): cluster by the extracted final answer
    (``seed_exact``: by the seed's raw key, with its rule for unreadable answers)."""
    keys = [extract_final_answer(data, r, question, seed_exact=seed_exact) for r in responses]
    return cluster_by_seed_key(responses, keys) if seed_exact else cluster_by_key(responses, keys)


def uses_embeddings(data: str) -> bool:
    """The dataset's spec has no final-answer extractor: its answers are clustered by embeddings."""
    return data_mod.spec(data).uses_embeddings


# ----------------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------------

class Embedder:
    """A sentence-transformers model that encodes one question's responses in one call.

    ``instruction``: ``auto`` gives the paper's instruction (``prompts.EMBEDDING_INSTRUCTION`` for the question)
    only to instruction-tuned embedders (an ``instructor`` model); ``on`` / ``off`` force it. The instruction goes
    in as sentence-transformers' ``prompt=`` with the pooling told to leave the prompt's tokens out
    (``set_pooling_include_prompt(False)``): the tokens attend to it, but the vector averages only the response's
    tokens, as INSTRUCTOR (the seed's ``hkunlp/instructor-large`` through ``InstructorEmbedding``) does. A plain
    model like all-MiniLM-L6-v2 was not trained with instructions, so ``auto`` leaves it off there.
    """

    def __init__(self, model: str = DEFAULT_EMBEDDING_MODEL, instruction: str = "auto", batch_size: int = 128,
                 device: str | None = None):
        if instruction not in INSTRUCTION_MODES:
            raise ValueError(f"instruction must be one of {INSTRUCTION_MODES}, not {instruction!r}")
        self.model_name = model
        self.use_instruction = instruction == "on" or (instruction == "auto" and "instructor" in model.lower())
        self.batch_size = batch_size
        self.device = device
        self._model = None

    def load(self):
        if self._model is None:
            import os

            from sentence_transformers import SentenceTransformer

            try:
                self._model = SentenceTransformer(self.model_name, device=self.device,
                                                  token=os.environ.get("HF_TOKEN") or None)
            except Exception as e:  # not in the cache offline, no network, a format this library cannot read
                first = (str(e).strip().splitlines() or [""])[0][:200]
                raise EmbedderError(
                    f"the embedding model {self.model_name} could not be loaded ({type(e).__name__}: {first}); put it in "
                    "the Hugging Face cache (or go online), or pass another --embedding-model"
                    + (" and leave out --seed-exact" if self.model_name == SEED_EMBEDDING_MODEL else "")) from None
            if self.use_instruction:
                self._model.set_pooling_include_prompt(False)  # the instruction conditions, it is not averaged in
        return self._model

    def encode(self, question: str, responses: Sequence[str]) -> np.ndarray:
        prompt = EMBEDDING_INSTRUCTION.format(question=question) if self.use_instruction else None
        return np.asarray(
            self.load().encode(list(responses), prompt=prompt, batch_size=self.batch_size,
                                show_progress_bar=False, convert_to_numpy=True)
        )


def check_embedder(name: str, seed_exact: bool = False) -> None:
    """Before any sampling, the embedding model can be found (``registry.check_loadable``): one line now, not after
    hours of sampling. ``seed_exact``: the seed's embedder, never replaced, so the fix is to get it (or leave the
    switch out)."""
    try:
        registry.check_loadable(name, "--embedding-model", sentence_transformers=True)
    except registry.RegistryError:
        if not seed_exact:
            raise
        raise EmbedderError(f"the embedding model {name} could not be loaded: it is not in the local Hugging Face cache "
                            f"and the Hub is offline (HF_HUB_OFFLINE=1); download it first (huggingface-cli download "
                            f"{name}), or leave out --seed-exact") from None


def cluster_question(data: str, question: str, responses: Sequence[str],
                     encode: Callable[[str, Sequence[str]], np.ndarray] | None = None,
                     threshold: float = DEFAULT_THRESHOLD, seed_exact: bool = False) -> Clustering:
    """Cluster one question's samples the way the paper does for ``data``.

    ``encode(question, responses)`` gives the embeddings (e.g. ``Embedder.encode``); needed for QA datasets.
    ``seed_exact``: answers keyed as the seed keyed them (``cluster_by_answer``).
    """
    if not uses_embeddings(data):
        return cluster_by_answer(data, question, responses, seed_exact)
    if encode is None:
        raise ValueError(f"{data} is clustered by embeddings: pass encode")
    if not responses:
        return Clustering()
    return cluster_by_embedding(responses, encode(question, responses), threshold)
