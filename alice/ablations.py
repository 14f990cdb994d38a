"""Ablations of Alice's proactive step (issue 30; docs/ablations.md): what each part of the mechanism is worth.

Each ablation is a method variant of the registry (``alice.methods.ABLATIONS``: ``ablation_<name>``, trained with
``--method ours-wts-stage2 --ours-wts-type <name>``, evaluated with ``--method ours-wts --ours-wts-type <name>``,
reported with its paired difference to Alice). Its training file is made here, from single-turn Alice's stage files
(``alice.alice_stages``), by ``W2SG_pipeline/ours/new_weak_to_strong_ablation.py --ablation <name>``:

    no_uncertainty  (a)  the final stage again, its prompt without the uncertainty statement (the sentence that gives
                         it and the words that mention it); same sampling and keep rule as Alice's final stage
    self_training   (b)  every question of the clustered file, labelled with the student's own zero-shot answer (the
                         zero-shot stage's answers for the several-cluster questions; new ones, sampled the same way,
                         for the one-cluster questions), kept whatever its form
    majority_vote   (c)  every question of the clustered file, labelled with the teacher's largest-cluster answer
                         (no summarizer, no student: the one-cluster rows are Alice's 'original' rows)
    greedy_final    (d)  the final stage again, with greedy decoding (temperature 0, one sample), Alice's keep rule
    agreeing_final  (e)  Alice's training file, its 'new' rows kept only when the final answer agrees with the
                         teacher's largest-cluster answer or with the student's zero-shot answer (answers compared as
                         the cluster stage compares them: the same key, or cosine above the cluster stage's threshold
                         with its embedder for hotpotqa/triviaqa); the 'original' rows unchanged

The rows keep Alice's question order and labels ('original' / 'new'; self-training's are 'zeroshot'). With
``--seed-exact`` (a), (d) keep their one sample whatever its form and (e) compares the seed's raw keys, as the stages
of that run do.
"""

from __future__ import annotations

from pathlib import Path

from . import fresh, grading, methods, prompts, registry
from .artifacts import alice_ablation
from . import data as data_mod
from .alice_stages import (GeneratorFactory, Setting, _counts, _factory, _finish, _generate, _sampling, first_kept,
                           keep_rule)
from .clustering import DEFAULT_EMBEDDING_MODEL, Embedder, check_embedder, cosine_matrix
from .errors import AliceError
from .fresh import read_meta
from .generation import Sampling
from .jsonl import JsonlError, require
from .options import DEFAULT_THRESHOLD, FINAL_TRIES, GenerationOptions
from .stage_files import by_id, checked_rows, clustered_order

NAMES = tuple(methods.ABLATIONS)
GENERATES = {"no_uncertainty": True, "self_training": True, "majority_vote": False, "greedy_final": True,
             "agreeing_final": False}  # whether its stage samples from the student (the pipeline's plan)


class AblationError(AliceError, ValueError):
    """An unknown ablation or a setting it is not defined for."""


def parse(text: str) -> tuple[str, ...]:
    """``--ablations``: ``all``, or names / letters separated by commas (``a,c`` or ``no_uncertainty,majority_vote``)."""
    by_letter = {letter: name for name, (letter, _) in methods.ABLATIONS.items()}
    if text.strip() == "all":
        return NAMES
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name = by_letter.get(part, part)
        if name not in methods.ABLATIONS:
            raise AblationError(f"unknown ablation {part!r}; choose from all, "
                                + ", ".join(f"{letter} ({n})" for n, (letter, _) in methods.ABLATIONS.items()))
        out.append(name)
    return tuple(n for n in NAMES if n in out)  # the table's order, each once


def path(s: Setting, name: str) -> Path:
    return s.layout.alice_ablation(s.model, s.teacher, s.student, s.data, name)


def command(s: Setting, name: str) -> str:
    return alice_ablation(s.layout, name, s.model, s.data, s.teacher, s.student).command(s.layout.root, s.data_dir)


# ---- (a) the final prompt without the uncertainty statement --------------------------------------------------
_WITHOUT_UNCERTAINTY = (  # (text, replacement), in order, on the dataset's final template
    (" and the uncertainty statement from that model as well", ""),
    ("another model's response and the uncertainty statement as references", "another model's response as a reference"),
    ("another model's response and the uncertainty statement to update", "another model's response to update"),
    ("    Here is another model's uncertainty statement: {}\n", ""),
    (", the model's response or the uncertainty statement", " or the model's response"),
    (" or the uncertainty statement", ""),
)


def no_uncertainty_template(data: str) -> str:
    """The dataset's final-answer template without the uncertainty statement (three fields: question, the student's
    answer, the teacher's answer)."""
    t = data_mod.spec(data).final_template
    for old, new in _WITHOUT_UNCERTAINTY:
        t = t.replace(old, new)
    if "uncertainty" in t or t.count("{}") != 3:
        raise AblationError(f"{data}'s final-answer prompt mentions the uncertainty statement in words this ablation "
                            "does not know how to remove: extend alice.ablations._WITHOUT_UNCERTAINTY")
    return t


def no_uncertainty_messages(data: str, question: str, student_answer: str, teacher_answer: str) -> prompts.Messages:
    return prompts.user(no_uncertainty_template(data).format(question, student_answer, teacher_answer))


# ---- Alice's stage files, read once ----------------------------------------------------------------------------
class _Alice:
    """The single-turn run's stage files (each checked; a missing one names the command that makes it)."""

    def __init__(self, s: Setting, need_train: bool = False):
        for p, stage in ((s.clustered, "cluster"), (s.originals, "uncertainty"), (s.uncertainty, "uncertainty"),
                         (s.zeroshot, "zeroshot")) + (((s.train, "final"),) if need_train else ()):
            require(p, s.command(stage))
        self.order = clustered_order(s.clustered, s.command("cluster"))
        self.originals = by_id(checked_rows(s.originals, s.command("uncertainty"), ("id", "question", "answer")), s.originals)
        self.uncertain = checked_rows(s.uncertainty, s.command("uncertainty"), ("id", "question", "final_response", "uncertainty"))
        self.zeroshot = by_id(checked_rows(s.zeroshot, s.command("zeroshot"), ("id", "zero_shot_student_response")), s.zeroshot)
        missing = [r["id"] for r in self.uncertain if r["id"] not in self.zeroshot]
        if missing or set(self.originals) | {r["id"] for r in self.uncertain} != set(self.order):
            raise JsonlError(f"{s.originals}, {s.uncertainty} and {s.zeroshot} do not match {s.clustered}: rerun the "
                             f"Alice stages from `{s.command('uncertainty')} --overwrite`")
        self.train = by_id(checked_rows(s.train, s.command("final"), ("id", "answer", "label")), s.train) if need_train else {}
        self.inputs = [s.clustered, s.originals, s.uncertainty, s.zeroshot] + ([s.train] if need_train else [])

    def rows(self, new: dict[str, dict]) -> list[dict]:
        """The 'original' rows and ``new`` (by id), in the clustered file's question order."""
        return [self.originals.get(i) or new[i] for i in self.order if i in self.originals or i in new]


def _new(r: dict, answer: str, label: str = "new") -> dict:
    return {"id": r["id"], "question": r["question"], "answer": answer, "label": label}


def _final_again(s: Setting, a: _Alice, gen: GenerationOptions, make, out: Path, name: str) -> tuple[list, dict]:
    """(a) and (d): the student's final answers again (other prompt / greedy), Alice's keep rule on them."""
    greedy = name == "greedy_final"
    tries = 1 if (greedy or s.seed_exact) else FINAL_TRIES  # greedy: K samples would be one answer K times
    sampling = Sampling.from_options(gen, n=1) if greedy else _sampling(s, gen, tries)
    build = (prompts.student_final_messages if greedy else
             lambda d, q, z, t, u: no_uncertainty_messages(d, q, z, t))
    items = [{"id": r["id"], "messages": build(s.data, r["question"], a.zeroshot[r["id"]]["zero_shot_student_response"],
                                               r["final_response"], r["uncertainty"])} for r in a.uncertain]
    texts = _generate(make, s.student_model, items, sampling, out, desc=f"student final answers ({name})")
    new = {}
    for r in a.uncertain:
        k = first_kept(s, texts[r["id"]], r["question"])
        if k is not None:
            new[r["id"]] = _new(r, texts[r["id"]][k])
    counts = dict(original=len(a.originals), new=len(new), dropped=len(a.uncertain) - len(new))
    return a.rows(new), dict(counts, final_tries=tries, **({"greedy": True} if greedy else {}), **keep_rule(s.seed_exact))


def _self_training(s: Setting, a: _Alice, gen: GenerationOptions, make, out: Path) -> tuple[list, dict]:
    """(b): the student's zero-shot answer to every question (the zero-shot stage's where it answered)."""
    todo = [r for i, r in a.originals.items()]
    texts = _generate(make, s.student_model, [{"id": r["id"], "messages": prompts.question_messages(r["question"])}
                                              for r in todo], _sampling(s, gen), out, desc="student zero-shot (all)")
    answers = {r["id"]: texts[r["id"]][0] for r in todo}
    answers.update({i: z["zero_shot_student_response"] for i, z in a.zeroshot.items()})
    questions = {**{i: r["question"] for i, r in a.originals.items()}, **{r["id"]: r["question"] for r in a.uncertain}}
    rows = [_new({"id": i, "question": questions[i]}, answers[i], "zeroshot") for i in a.order]
    return rows, dict(zeroshot=len(rows), generated=len(todo), reused=len(rows) - len(todo))


def _majority_vote(s: Setting, a: _Alice) -> tuple[list, dict]:
    """(c): the teacher's largest-cluster answer as the label of every question."""
    new = {r["id"]: _new(r, r["final_response"], "majority") for r in a.uncertain}
    return a.rows(new), dict(original=len(a.originals), majority=len(new))


def _agrees(s: Setting, encode, threshold: float):
    """agree(question, answer, others): the answer is the same as one of ``others`` as the cluster stage compares."""
    if not data_mod.spec(s.data).uses_embeddings:
        def key(text, q):
            return grading.extract_final_answer(s.data, text, q, seed_exact=s.seed_exact) if text else None

        return lambda q, answer, others: key(answer, q) is not None and key(answer, q) in {key(o, q) for o in others}

    def agree(q, answer, others):
        sim = cosine_matrix(encode(q, [answer, *others]))
        return bool((sim[0, 1:] > threshold).any())
    return agree


def _agreeing_final(s: Setting, a: _Alice, encode=None) -> tuple[list, dict]:
    """(e): Alice's training file, its 'new' rows kept only when they agree with the teacher's or the zero-shot answer."""
    rec = (read_meta(s.clustered) or {}).get("settings", {})
    threshold = rec.get("threshold") or DEFAULT_THRESHOLD
    if encode is None and data_mod.spec(s.data).uses_embeddings:
        encode = Embedder(rec.get("embedding_model") or DEFAULT_EMBEDDING_MODEL,
                          instruction=rec.get("embedding_instruction") or "auto").encode
    agree = _agrees(s, encode, threshold)
    unc = {r["id"]: r for r in a.uncertain}
    new = {i: r for i, r in a.train.items() if r["label"] == "new" and i in unc and agree(
        unc[i]["question"], r["answer"], [unc[i]["final_response"], a.zeroshot[i]["zero_shot_student_response"]])}
    new = {i: _new(unc[i], r["answer"]) for i, r in new.items()}
    before = sum(r["label"] == "new" for r in a.train.values())
    return a.rows(new), dict(original=len(a.originals), new=len(new), disagreeing=before - len(new),
                             threshold=threshold)


def run_ablation(s: Setting, name: str, gen: GenerationOptions, *, make_generator: GeneratorFactory | None = None,
                 encode=None) -> dict | None:
    """Make ablation ``name``'s training file from single-turn Alice's stage files (``s``); None when up to date."""
    if name not in methods.ABLATIONS:
        raise AblationError(f"unknown ablation {name!r}; choose from {', '.join(NAMES)}")
    if s.cascade:
        raise AblationError("the ablations are defined on single-turn Alice: pass --method singleturn")
    with fresh.lock(path(s, name)):  # as the stages: two runs never make one file at once (alice.fresh)
        return _make(s, name, gen, make_generator, encode)


def _make(s: Setting, name: str, gen: GenerationOptions, make_generator: GeneratorFactory | None, encode) -> dict | None:
    out = path(s, name)
    a = _Alice(s, need_train=name == "agreeing_final")
    settings = s.settings(f"ablation:{name}", gen, ablation=name)
    rec = (read_meta(s.clustered) or {}).get("settings", {})
    embeds = name == "agreeing_final" and data_mod.spec(s.data).uses_embeddings
    if embeds:
        settings.update(embedding_model=rec.get("embedding_model"), threshold=rec.get("threshold"))
    if name in ("no_uncertainty", "greedy_final"):
        greedy = name == "greedy_final"
        settings.update(final_tries=1 if greedy or s.seed_exact else FINAL_TRIES, **keep_rule(s.seed_exact),
                        **({"temperature": 0.0, "top_p": 1.0} if greedy else {}))
    generates = GENERATES[name]
    embedder = (rec.get("embedding_model") or DEFAULT_EMBEDDING_MODEL) if embeds and encode is None else None
    inputs = a.inputs + ([s.student_model] if generates else []) + ([embedder] if embedder else [])
    if generates and make_generator is None:  # before any sampling, as the stages check theirs
        registry.check_loadable(s.student_model, "--student")
    if embedder:
        check_embedder(embedder, seed_exact=s.seed_exact)
    if s.fresh(out, settings, inputs):
        return None
    make = make_generator or _factory(gen)
    if name in ("no_uncertainty", "greedy_final"):
        rows, counts = _final_again(s, a, gen, make, out, name)
    elif name == "self_training":
        rows, counts = _self_training(s, a, gen, make, out)
    elif name == "majority_vote":
        rows, counts = _majority_vote(s, a)
    else:
        rows, counts = _agreeing_final(s, a, encode)
    _finish(out, rows)
    s.record(out, settings, inputs)
    print(f"wrote {out}", flush=True)
    return _counts(f"ablation {name}", rows=len(rows), **counts)
