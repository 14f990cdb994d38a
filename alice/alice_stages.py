"""The four stages of Alice (the paper's step 4); ``W2SG_pipeline/ours/new_weak_to_strong_*.py`` are their front doors.

    cluster      the trained teacher (cascade: the trained mid-level model) samples N answers per question;
                 they are clustered (``alice.clustering``)              -> *_sampled_clustered.jsonl
    uncertainty  one cluster: the answer is kept as is ('original' rows -> *_to_*.original.jsonl);
                 several: the summarizer LLM states the teacher's uncertainty -> *_uncertainty.jsonl
    zeroshot     the (untrained) student answers those questions itself -> *_zeroshot.jsonl
    final        the student answers again from its own answer, the teacher's and the uncertainty ('new'
                 rows): up to ``final_tries`` samples per question, the first well-formed one kept
                 (``grading.well_formed``: the required final-answer format, reasoning before it); a question with
                 none is dropped. The training file *_to_*.jsonl = 'original' + 'new' rows in question order;
                 *_to_*.final_samples.jsonl keeps every final sample and which one was kept (None: dropped)

Files are joined by question id. Each output records the settings and input fingerprints that made it
(``alice.fresh``): a rerun with the same ones does nothing, one with other settings (or after an input changed)
stops with one line naming ``--overwrite`` (which redoes it). A stage resumes its generation after a kill
(``generation.generate_resumable``) and writes its output atomically, so a rerun never duplicates rows. The
training file is written once, whole, by the final stage. The uncertainty file is shared by every student of
one sampler; the 'original' rows are written per student (a second student reuses the statements).

Every Alice stage samples with temperature 0.9 and top_p 0.95, as the paper's scripts did.
"""

from __future__ import annotations

import argparse
import functools
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import artifacts, cli, fresh, grading, prompts, registry
from . import data as data_mod
from .clustering import (DEFAULT_EMBEDDING_MODEL, SEED_EMBEDDING_MODEL, Embedder, EmbedderError, check_embedder,
                         cluster_question, uses_embeddings)
from .generation import Generator, Sampling, clear_resumable, generate_resumable
from .jsonl import JsonlError, MissingInputError, require, require_trained, write_jsonl
from .options import (DEFAULT_MAX_NEW_TOKENS, DEFAULT_NUM_SAMPLES, DEFAULT_THRESHOLD, FINAL_TRIES, SAMPLING,
                      GenerationOptions)
from .paths import Layout
from .stage_files import by_id, checked_rows, clustered_order, clustered_rows, require_text
from .records import model_identity

METHODS = ("singleturn", "cascade")
TEMPERATURE, TOP_P = SAMPLING["alice"].temperature, SAMPLING["alice"].top_p
STAGES = artifacts.ALICE_STAGES


def stage_parser(description: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The flags every Alice stage takes: --data --model --teacher --student [--midlevel] --method + generation."""
    p = cli.parser(description, prog=prog)
    p.add_argument("--method", default="singleturn", choices=METHODS,
                   help="singleturn: teacher -> student; cascade: the trained mid-level model -> student")
    p.add_argument("--seed-exact", action="store_true",
                   help="the seed's behaviour where this project deliberately differs (docs/seed-differences.md): the "
                        "seed's raw clustering keys and instructor-large for QA (cluster), one final sample kept "
                        "whatever its form (final)")
    cli.add_generation_args(p)
    return p


def originals_path(train: Path) -> Path:
    """The 'original' rows the uncertainty stage keeps for the final stage (next to the training file)."""
    return train.with_name(train.stem + ".original.jsonl")


def final_samples_path(train: Path) -> Path:
    """Every final sample of the student, kept or not, with the index of the kept one (next to the training file)."""
    return train.with_name(train.stem + ".final_samples.jsonl")


@dataclass
class Setting:
    """One Alice run: who teaches whom on which data, and where its files live."""

    data: str
    model: str
    teacher: str
    student: str
    method: str = "singleturn"
    midlevel: str | None = None
    layout: Layout = Layout(Path("."))
    data_dir: str | None = None
    limit: int | None = None
    overwrite: bool = False
    argv: list[str] | None = None
    seed_exact: bool = False  # --seed-exact: the seed's behaviour where the project deliberately differs
    temperature: float = TEMPERATURE  # every Alice stage's sampling (the seed's values)
    top_p: float = TOP_P

    @property
    def cascade(self) -> bool:
        return self.method == "cascade"

    @property
    def sampler(self) -> str:
        """The model whose answers are clustered, named as the teacher in every file name of the run."""
        return self.midlevel if self.cascade else self.teacher

    # ---- files and models: the artifact table (alice.artifacts) ------------------------------------
    def artifact(self, stage: str) -> artifacts.Artifact:
        return artifacts.alice_stage(self.layout, stage, self.model, self.data, self.teacher, self.student,
                                     self.midlevel if self.cascade else None)

    @property
    def clustered(self) -> Path:
        return self.artifact("cluster").path

    @property
    def uncertainty(self) -> Path:
        return self.artifact("uncertainty").path

    @property
    def zeroshot(self) -> Path:
        return self.artifact("zeroshot").path

    @property
    def train(self) -> Path:
        return self.artifact("final").path

    @property
    def originals(self) -> Path:
        return originals_path(self.train)

    @property
    def final_samples(self) -> Path:
        return final_samples_path(self.train)

    def _sampler(self) -> artifacts.Artifact:
        return artifacts.alice_sampler(self.layout, self.model, self.data, self.teacher,
                                       self.midlevel if self.cascade else None)

    @property
    def sampler_model(self) -> Path:
        """The trained model that samples: stage-1 teacher, or (cascade) the mid-level model of hop 1."""
        return self._sampler().path

    def sampler_command(self) -> str:
        return self._sampler().command(self.layout.root, self.data_dir)

    @property
    def student_model(self) -> str:
        return registry.resolve_model(self.model, self.student)

    def command(self, stage: str) -> str:
        """The command line that runs ``stage`` of this setting (for 'run X first' messages)."""
        return self.artifact(stage).command(self.layout.root, self.data_dir)

    def settings(self, stage: str, gen: GenerationOptions, **extra) -> dict:
        """What the content of ``stage``'s output depends on (besides its input files): recorded with it.
        cluster and uncertainty do not depend on the student (their files are shared by every student)."""
        # models by identity (alice.records: a folder's content, a hub id's revision), never by a path
        out = {"stage": stage, "data": self.data, "model": self.model, "method": self.method,
               "sampler": registry.model_tag(self.sampler),
               "limit": self.limit, "max_new_tokens": gen.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
               "seed": gen.seed or 0, "temperature": self.temperature, "top_p": self.top_p}
        if stage in ("zeroshot", "final"):
            out["student"] = model_identity(self.student_model)
        if self.seed_exact:  # recorded only when on: files made before the switch existed stay valid
            out["seed_exact"] = True
        return dict(out, **gen.recorded(), **extra)

    def fresh(self, out: Path, settings: dict, inputs: list, quiet: bool = False) -> bool:
        """True when ``out`` is up to date (skip); False to make it; a one-line error when made otherwise."""
        return fresh.check_fresh(out, settings, inputs, overwrite=self.overwrite, argv=self.argv,
                                 log=(lambda m: None) if quiet else (lambda m: print(m, flush=True)))

    def record(self, out: Path, settings: dict, inputs: list) -> None:
        fresh.record(out, settings, inputs, argv=self.argv)

    @property
    def subset(self) -> str:
        """The row set the sampler labels: the W2S part (single-turn) or its second half (cascade)."""
        return "cascade_second" if self.cascade else "w2s_part"

    def questions(self, train: list[dict] | None = None) -> list[dict]:
        """The questions the sampler labels (taken from ``train``, the train split already loaded, when given)."""
        rows = (data_mod.SUBSETS[self.subset](self.data, train) if train is not None
                else data_mod.load_subset(self.data, self.subset, self.data_dir))
        return rows[: self.limit] if self.limit else rows


def setting_from_args(p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None = None):
    """The ``Setting`` of an Alice stage script's parsed flags (``stage_parser``); a missing
    or unknown model size is a parser error."""
    for role in ("teacher", "student"):
        cli.resolve(p, args, role)
    if args.method == "cascade":
        cli.resolve(p, args, "midlevel")
    cli.check_weak_strong(p, args.model, args.teacher, args.student, args.midlevel if args.method == "cascade" else None)
    return Setting(data=args.data, model=args.model, teacher=args.teacher, student=args.student,
                   method=args.method, midlevel=args.midlevel, layout=Layout.default(args.root),
                   data_dir=args.data_dir, limit=args.limit, overwrite=args.overwrite,
                   argv=fresh.command_line(argv), seed_exact=args.seed_exact)


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
GeneratorFactory = Callable[[str], object]


def _factory(gen: GenerationOptions) -> GeneratorFactory:
    return lambda model: Generator.from_options(model, gen)


def _sampling(s: Setting, gen: GenerationOptions, n: int = 1):
    return Sampling.from_options(gen, temperature=s.temperature, top_p=s.top_p, n=n)


def _generate(make_generator: GeneratorFactory, model: str, items: list[dict], sampling, out: Path, desc: str) -> dict:
    """``generate_resumable`` with a generator that is made (and loaded) only if there are items."""
    if not items:
        return {}
    with closing(make_generator(model)) as gen:  # any object with close(): tests pass stand-ins
        return generate_resumable(gen, items, sampling, out, desc=desc)


def _finish(out: Path, rows: list[dict]) -> None:
    write_jsonl(out, rows)
    clear_resumable(out)


def _counts(stage: str, **counts) -> dict:
    names = {"na": "N/A (no cluster)"}
    print(f"[{stage}] " + ", ".join(f"{names.get(k, k.replace('_', ' '))}: {v}" for k, v in counts.items()), flush=True)
    return counts


# ----------------------------------------------------------------------------------------------------
# the stages
# ----------------------------------------------------------------------------------------------------

def _locked(stage: str):
    """Run a stage holding the lock of its output (``fresh.lock``): a second run of it stops in one line."""
    def wrap(fn):
        return functools.wraps(fn)(lambda s, *a, **kw: _under_lock(s.artifact(stage).path, fn, s, *a, **kw))
    return wrap


def _under_lock(path, fn, *a, **kw):
    with fresh.lock(path):
        return fn(*a, **kw)


@_locked("cluster")
def run_cluster(s: Setting, gen: GenerationOptions, *, num_samples: int = DEFAULT_NUM_SAMPLES,
                threshold: float = DEFAULT_THRESHOLD,
                embedding_model: str | None = None, embedding_instruction: str = "auto",
                make_generator: GeneratorFactory | None = None, encode=None) -> dict | None:
    """Sample ``num_samples`` answers per question from the trained sampler and cluster them (``s.seed_exact``: the
    seed's raw answer keys; QA: its embedder, instructor-large with its instruction, loaded before any sampling)."""
    out = s.clustered
    model = require_trained(s.sampler_model, s.sampler_command())
    if s.seed_exact and uses_embeddings(s.data):
        if embedding_model not in (None, SEED_EMBEDDING_MODEL) or embedding_instruction not in ("auto", "on"):
            raise EmbedderError(f"--seed-exact clusters {s.data} with {SEED_EMBEDDING_MODEL} and its instruction (the "
                                f"seed's); leave out --embedding-model {embedding_model} / --embedding-instruction")
        embedding_model, embedding_instruction = SEED_EMBEDDING_MODEL, "on"
    settings = s.settings("cluster", gen, num_samples=num_samples, threshold=threshold,
                          embedding_model=((embedding_model or DEFAULT_EMBEDDING_MODEL) if uses_embeddings(s.data) else None),
                          embedding_instruction=(embedding_instruction if uses_embeddings(s.data) else None))
    embeds = uses_embeddings(s.data) and encode is None
    inputs = [model, fresh.Data(s.data, "train", s.data_dir)] + (
        [embedding_model or DEFAULT_EMBEDDING_MODEL] if embeds else [])
    if embeds:  # checked before any sampling: an unknown embedding model is found now, not after hours of it
        check_embedder(embedding_model or DEFAULT_EMBEDDING_MODEL, seed_exact=s.seed_exact)
    if s.fresh(out, settings, inputs):
        return None
    if encode is None and uses_embeddings(s.data):
        embedder = Embedder(embedding_model or DEFAULT_EMBEDDING_MODEL, instruction=embedding_instruction)
        if s.seed_exact:
            embedder.load()  # the seed's embedder: one line now, before any sampling, when it cannot be loaded
        encode = embedder.encode
    questions = s.questions()
    items = [{"id": q["id"], "messages": prompts.question_messages(q["question"])} for q in questions]
    samples = _generate(make_generator or _factory(gen), str(model), items, _sampling(s, gen, num_samples), out,
                        desc=f"sampling {num_samples} answers")

    rows = []
    n_clusters = singletons = unreadable = one = 0
    for q in questions:
        responses = samples[q["id"]]
        c = cluster_question(s.data, q["question"], responses, encode, threshold, seed_exact=s.seed_exact)
        n_clusters += len(c.clusters)
        singletons += c.singletons
        unreadable += c.unreadable
        if c.final_response is None:
            continue  # no answer given twice: N/A, not written (as the seed)
        one += len(c.clusters) == 1
        rows.append({"id": q["id"], "question": q["question"], "sampled_responses": responses,
                     "clusters": c.clusters, "final_response": c.final_response})
    _finish(out, rows)
    s.record(out, settings, inputs)
    print(f"wrote {out}", flush=True)
    return _counts("cluster", questions=len(questions), samples_per_question=num_samples, written=len(rows),
                   na=len(questions) - len(rows), one_cluster=one, several_clusters=len(rows) - one,
                   clusters=n_clusters, singletons=singletons, unreadable=unreadable)


@_locked("uncertainty")
def run_uncertainty(s: Setting, gen: GenerationOptions, *, summarizer: str | None = None,
                    make_generator: GeneratorFactory | None = None) -> dict | None:
    """Questions with one cluster -> 'original' rows; others -> the summarizer's uncertainty statement."""
    out = s.uncertainty
    summarizer_id = registry.resolve_summarizer(summarizer)
    require(s.clustered, s.command("cluster"))
    if make_generator is None:
        registry.check_loadable(summarizer_id, "--summarizer-model")
    settings = s.settings("uncertainty", gen, summarizer=summarizer_id)
    inputs = [s.clustered, summarizer_id]
    o_settings = s.settings("originals", gen)
    have_statements = s.fresh(out, settings, inputs, quiet=True)
    if have_statements and s.fresh(s.originals, o_settings, [s.clustered]):
        return None
    rows = clustered_rows(s.clustered, s.command("cluster"))
    single = [r for r in rows if len(r["clusters"]) == 1]
    several = [r for r in rows if len(r["clusters"]) > 1]
    # the 'original' rows of this student's training file (cheap: no generation; another student of the same
    # sampler may have made the shared uncertainty file already)
    write_jsonl(s.originals, [{"id": r["id"], "question": r["question"], "answer": r["final_response"],
                               "label": "original"} for r in single])
    s.record(s.originals, o_settings, [s.clustered])
    if have_statements:
        print(f"wrote {s.originals} ({out} is up to date)", flush=True)
        return _counts("uncertainty", questions=len(rows), original=len(single), uncertain=len(several))
    items = [{"id": r["id"], "messages": prompts.uncertainty_messages(
        s.data, r["question"], [c["response"] for c in r["clusters"]])} for r in several]
    texts = _generate(make_generator or _factory(gen), summarizer_id, items,
                      _sampling(s, gen), out, desc="uncertainty statements")
    _finish(out, [{"id": r["id"], "question": r["question"], "final_response": r["final_response"],
                   "uncertainty": texts[r["id"]][0]} for r in several])
    s.record(out, settings, inputs)
    print(f"wrote {s.originals} and {out}", flush=True)
    return _counts("uncertainty", questions=len(rows), original=len(single), uncertain=len(several))


@_locked("zeroshot")
def run_zeroshot(s: Setting, gen: GenerationOptions, *, make_generator: GeneratorFactory | None = None) -> dict | None:
    """The untrained student answers every uncertain question zero-shot."""
    out = s.zeroshot
    require(s.uncertainty, s.command("uncertainty"))
    settings, inputs = s.settings("zeroshot", gen), [s.uncertainty, s.student_model]
    if make_generator is None:
        registry.check_loadable(s.student_model, "--student")
    if s.fresh(out, settings, inputs):
        return None
    rows = checked_rows(s.uncertainty, s.command("uncertainty"), ("id", "question"))
    items = [{"id": r["id"], "messages": prompts.question_messages(r["question"])} for r in rows]
    texts = _generate(make_generator or _factory(gen), s.student_model, items, _sampling(s, gen), out,
                      desc="student zero-shot")
    _finish(out, [{"id": r["id"], "question": r["question"], "zero_shot_student_response": texts[r["id"]][0]}
                  for r in rows])
    s.record(out, settings, inputs)
    print(f"wrote {out}", flush=True)
    return _counts("zeroshot", questions=len(rows))


def keep_rule(seed_exact: bool) -> dict:
    """The final stage's rule for keeping a sample, as recorded with its outputs."""
    if seed_exact:
        return {"keeps": "every sample (the seed's)"}
    return {"well_formed_min_chars": grading.MIN_REASONING_CHARS, "well_formed_rejects_example_copies": True}


def first_kept(s: Setting, texts: list[str], question: str) -> int | None:
    """The index of the final sample kept: the first well-formed one; ``s.seed_exact``: the first, whatever its form."""
    if s.seed_exact:
        return 0 if texts else None
    return next((k for k, t in enumerate(texts) if grading.well_formed(s.data, t, question)), None)


@_locked("final")
def run_final(s: Setting, gen: GenerationOptions, *, final_tries: int = FINAL_TRIES,
              make_generator: GeneratorFactory | None = None) -> dict | None:
    """The student's proactive answers ('new') + the 'original' rows -> the training file, in question order.

    The student samples ``final_tries`` answers per uncertain question; the first well-formed one
    (``grading.well_formed``) is its 'new' row; a question with no well-formed sample is dropped (counted, printed).
    ``s.seed_exact``: as the seed, one sample per question, kept whatever its form (``final_tries`` must be 1)."""
    if final_tries < 1:
        raise ValueError(f"final_tries must be at least 1, got {final_tries}")
    if s.seed_exact and final_tries != 1:
        raise ValueError(f"--seed-exact samples one final answer per question (the seed's), not {final_tries}")
    out = s.train
    for path, stage in ((s.clustered, "cluster"), (s.originals, "uncertainty"), (s.uncertainty, "uncertainty"),
                        (s.zeroshot, "zeroshot")):
        require(path, s.command(stage))
    # the well-formedness rule is part of what makes the file: another K (or rule) is not passed off as done
    settings = s.settings("final", gen, final_tries=final_tries, **keep_rule(s.seed_exact))
    inputs = [s.clustered, s.originals, s.uncertainty, s.zeroshot, s.student_model]
    if make_generator is None:
        registry.check_loadable(s.student_model, "--student")
    if s.fresh(out, settings, inputs) and s.fresh(s.final_samples, settings, inputs, quiet=True):  # both outputs
        return None
    order = clustered_order(s.clustered, s.command("cluster"))
    originals = by_id(checked_rows(s.originals, s.command("uncertainty"), ("id", "question", "answer")), s.originals)
    uncertain = checked_rows(s.uncertainty, s.command("uncertainty"), ("id", "question", "final_response", "uncertainty"))
    zeroshot = by_id(checked_rows(s.zeroshot, s.command("zeroshot"), ("id", "zero_shot_student_response")), s.zeroshot)
    require_text(list(zeroshot.values()), s.zeroshot, s.command("zeroshot"), ("zero_shot_student_response",))
    require_text(uncertain, s.uncertainty, s.command("uncertainty"), ("question", "final_response", "uncertainty"))
    require_text(list(originals.values()), s.originals, s.command("uncertainty"), ("question", "answer"))

    missing = [r["id"] for r in uncertain if r["id"] not in zeroshot]
    if missing:
        raise MissingInputError(f"{s.zeroshot} has no answer for {len(missing)} question(s) of {s.uncertainty} "
                                f"(e.g. {missing[0]}): delete it and run `{s.command('zeroshot')}`")
    if set(originals) | {r["id"] for r in uncertain} != set(order):
        raise JsonlError(f"{s.originals} and {s.uncertainty} do not match {s.clustered} (made from other samples?): "
                         f"delete them and run `{s.command('uncertainty')}`")

    items = [{"id": r["id"], "messages": prompts.student_final_messages(
        s.data, r["question"], zeroshot[r["id"]]["zero_shot_student_response"], r["final_response"],
        r["uncertainty"])} for r in uncertain]
    texts = _generate(make_generator or _factory(gen), s.student_model, items, _sampling(s, gen, final_tries), out,
                      desc=f"student final answers ({final_tries} per question)")
    new, later, samples = {}, 0, []
    for r in uncertain:
        k = first_kept(s, texts[r["id"]], r["question"])
        samples.append({"id": r["id"], "samples": texts[r["id"]], "kept": k})  # what was tried, for inspection
        if k is None:
            continue  # no well-formed answer: dropped, not replaced
        later += k > 0
        new[r["id"]] = {"id": r["id"], "question": r["question"], "answer": texts[r["id"]][k], "label": "new"}
    dropped = len(uncertain) - len(new)
    rows = [originals.get(i) or new[i] for i in order if i in originals or i in new]
    write_jsonl(s.final_samples, samples)  # before the training file: a file that exists is complete
    _finish(out, rows)
    s.record(s.final_samples, settings, inputs)
    s.record(out, settings, inputs)
    print(f"wrote {out} (every final sample: {s.final_samples.name})", flush=True)
    print(f"[final] dropped: {dropped} questions with no well-formed final answer of {final_tries}", flush=True)
    return _counts("final", questions=len(rows), original=len(originals), new=len(new), dropped=dropped,
                   final_tries=final_tries, well_formed_after_first_sample=later)
