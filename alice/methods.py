"""The method registry: every way a model is trained or evaluated in the paper's comparison, one entry each.

An entry (``Method``) declares which role it trains, what its rows are read from (``input``, one of ``INPUTS``, and an
optional row filter), its output folder, the evaluation that scores it, its rows in the report and whether they get a
PGR. Everything that needs "what is method X" reads this table: ``training/SFT.py``'s choices and ``sft_data.resolve_job``,
``evaluation.py``'s choices and ``evaluate.target``, the artifact table (``alice.artifacts``), the seed's metric, the
report's rows, and the pipeline's plan for variants beyond the paper's (``paper=False``).

The paper's flag spellings are aliases of an entry at the command-line edge only: ``training/SFT.py --method
ours-wts-stage2 --ours-wts-type cascade1`` is ``alice_mid`` (``by_sft_flags``), ``evaluation.py --method ours-wts
--ours-wts-type cascade`` is ``alice_cascade`` (``by_eval_flags``). A new variant is one ``register(Method(...))``
(plus its stage code, if new): ``tests/test_new_method.py`` adds one and runs it through the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import AliceError

# What a training run's rows are read from (``sft_data`` reads each kind):
INPUTS = {
    "ground_truth": "the W2S part of the train split, with its ground-truth answers",
    "cot": "the teacher's correct CoT (*_cot_correct.jsonl); datasets that ship CoT: the teacher half",
    "cot_qa": "the questions of the teacher's correct CoT with their short answers; gsm8k: the teacher half",
    "original_labels": "original W2S labels of the method's type (qa or cot teacher) on the W2S part",
    "original_cascade_labels": "original W2S cascade labels: hop 1 by the teacher, hop 2 by the mid-level model",
    "alice_final": "Alice's training file of the single-turn run teacher -> student",
    "alice_cascade_final": "Alice's training file of the cascade run (the mid-level model samples) -> student",
    "alice_ablation": "the training file of an ablation of single-turn Alice (its type names it; alice.ablations)",
}
# Row filters applied after reading: ``cascade_first`` keeps the ids of the cascade's first half of the W2S part;
# ``label:<x>`` keeps the rows whose 'label' is x (Alice's 'original' / 'new' rows).
ROW_FILTERS = ("cascade_first", "label:")


class MethodError(AliceError, ValueError):
    """An unknown method or type; the message lists the valid ones."""


@dataclass(frozen=True)
class ReportRow:
    """One row of the report: ``evaluated`` is the role whose size is evaluated (the run's --student), ``via`` the
    role passed as the run's --teacher (None: none; ``midlevel``: the row exists only with --midlevel)."""

    key: str
    label: str  # {teacher} {student} {midlevel} are filled in; " (via {midlevel})" is dropped without a mid-level
    evaluated: str = "student"
    via: str | None = "teacher"


@dataclass(frozen=True)
class Method:
    key: str
    trains: str | None  # 'teacher' | 'student' (the role given the trained size); None: nothing is trained (naive)
    sft: tuple[str, str | None] | None  # training/SFT.py --method and its type flag's value (the paper's spellings)
    input: str | None  # INPUTS key
    folder: str | None  # model_outputs/<folder>/<name>
    name: str | None  # folder name: {model} {teacher} {student} {data} {type} (sizes as registry.model_tag names)
    eval: tuple[str, str | None] | None = None  # evaluation.py --method and its type flag's value; None: not scored
    report: tuple[ReportRow, ...] = ()
    pgr: bool = False  # a weak-to-strong method: its report rows get a PGR
    rows: str | None = None  # a row filter (ROW_FILTERS)
    seed_reads_choice: bool = False  # trained on CoT-style targets: the seed's metric read 'My choice is' (ARC)
    paper: bool = True  # the pipeline's plan wires it by hand; False: the plan adds its training and evaluation
    versus: str | None = None  # the report adds the paired difference of its rows against this report row (e.g. alice)

    @property
    def sft_type_flag(self) -> str | None:
        """``--ours-wts-type`` / ``--original-wts-type`` (None: no type)."""
        return _type_flag(self.sft[0]) if self.sft and self.sft[1] is not None else None

    @property
    def eval_type_flag(self) -> str | None:
        return _type_flag(self.eval[0]) if self.eval and self.eval[1] is not None else None


def _type_flag(method: str) -> str:
    return "--ours-wts-type" if method.startswith("ours") else "--original-wts-type"


METHODS: dict[str, Method] = {}


def register(m: Method, *, replace: bool = False) -> Method:
    """Add a method variant: from then on its flags work in training/SFT.py and evaluation.py, and the report (and,
    with ``paper=False``, the pipeline) include it."""
    if m.key in METHODS and not replace:
        raise MethodError(f"method {m.key!r} is registered already (pass replace=True)")
    if m.input is not None and m.input not in INPUTS:
        raise MethodError(f"method {m.key!r}: unknown input {m.input!r}; choose from {', '.join(INPUTS)}")
    if m.rows is not None and not m.rows.startswith(ROW_FILTERS):
        raise MethodError(f"method {m.key!r}: unknown row filter {m.rows!r}")
    METHODS[m.key] = m
    return m


def get(key: str) -> Method:
    if key not in METHODS:
        raise MethodError(f"unknown method {key!r}; choose from {', '.join(METHODS)}")
    return METHODS[key]


# ---- the command-line edge: the paper's spellings -------------------------------------------------------------
def sft_methods() -> tuple[str, ...]:
    """training/SFT.py's --method choices."""
    return tuple(dict.fromkeys(m.sft[0] for m in METHODS.values() if m.sft))


def sft_types(flag: str, method: str | None = None) -> tuple[str, ...]:
    """The values of ``flag`` (--ours-wts-type / --original-wts-type) training/SFT.py takes (for ``method``)."""
    return tuple(dict.fromkeys(m.sft[1] for m in METHODS.values() if m.sft and m.sft_type_flag == flag
                               and (method is None or m.sft[0] == method)))


def _no_other_type(method: str, flag: str | None, original_type: str | None, ours_type: str | None) -> None:
    """A type flag the method does not read is a mistake (it would be ignored silently), not a no-op."""
    for f, given in (("--original-wts-type", original_type), ("--ours-wts-type", ours_type)):
        if given is not None and f != flag:
            raise MethodError(f"--method {method} takes no {f}" + (f" (it takes {flag})" if flag else ""))


def by_sft_flags(method: str, ours_type: str | None = None, original_type: str | None = None) -> Method:
    """The entry of ``training/SFT.py --method M [--ours-wts-type T | --original-wts-type T]``; a type may be left out
    when the method has only one."""
    found = [m for m in METHODS.values() if m.sft and m.sft[0] == method]
    if not found:
        raise MethodError(f"unknown --method {method!r}; choose from {', '.join(sft_methods())}")
    _no_other_type(method, found[0].sft_type_flag, original_type, ours_type)
    if found[0].sft_type_flag is None:
        return found[0]
    flag = found[0].sft_type_flag
    given = ours_type if flag == "--ours-wts-type" else original_type
    choices = [m.sft[1] for m in found]
    if given is None:
        if len(found) == 1:
            return found[0]
        raise MethodError(f"--method {method} needs {flag} (one of {', '.join(choices)})")
    for m in found:
        if m.sft[1] == given:
            return m
    raise MethodError(f"--method {method} takes {flag} {' or '.join(choices)}, not {given!r}")


def versus() -> tuple[tuple[str, str], ...]:
    """(report row, the report row it is compared with) of every entry with ``versus``."""
    return tuple((r.key, m.versus) for m in METHODS.values() if m.versus for r in m.report)


def eval_methods() -> tuple[str, ...]:
    """evaluation.py's --method choices."""
    return tuple(dict.fromkeys(m.eval[0] for m in METHODS.values() if m.eval))


def eval_types(flag: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(m.eval[1] for m in METHODS.values() if m.eval and m.eval_type_flag == flag))


def by_eval_flags(method: str, original_wts_type: str | None = None, ours_wts_type: str | None = None) -> Method:
    """The entry of ``evaluation.py --method M [--original-wts-type T | --ours-wts-type T]``."""
    found = [m for m in METHODS.values() if m.eval and m.eval[0] == method]
    if not found:
        raise MethodError(f"unknown method {method!r}; choose from {', '.join(eval_methods())}")
    flag = found[0].eval_type_flag
    _no_other_type(method, flag, original_wts_type, ours_wts_type)
    if flag is None:
        return found[0]
    given = ours_wts_type if flag == "--ours-wts-type" else original_wts_type
    for m in found:
        if m.eval[1] == given:
            return m
    raise MethodError(f"--method {method} needs {flag} {'|'.join(m.eval[1] for m in found)}")


# ---- the original labeller's --type: the paper's spellings of a cascade hop ------------------------------------
_LABEL_ALIASES = {"cascade_1": "cascade1", "cascade_2": "cascade2"}


def canonical_label_type(type_: str | None) -> str | None:
    """``cascade_1`` -> ``cascade1`` (original_weak_to_strong.py's flag spelling); every other type as it is."""
    return _LABEL_ALIASES.get(type_, type_)


# ---- the paper's methods ---------------------------------------------------------------------------------------
_TO = "{model}_{teacher}_to_{student}_{data}"
for _m in (
    Method("naive", None, None, None, None, None, eval=("naive", None), report=(
        ReportRow("naive_weak", "naive weak ({teacher}, untrained)", evaluated="teacher", via=None),
        ReportRow("naive_strong", "naive strong ({student}, untrained)", via=None))),
    Method("base", "student", ("base", None), "ground_truth", "base", "{model}_{student}_{data}", eval=("base", None),
           report=(ReportRow("weak", "weak ({teacher} on ground truth)", evaluated="teacher", via=None),
                   ReportRow("strong", "strong ({student} on ground truth)", via=None))),
    # stage 1: the teacher on CoT (Alice's sampler; also the original baseline's cot teacher) or on q-a pairs
    Method("teacher_cot", "teacher", ("ours-wts-stage1", "singleturn"), "cot", "ours", "{model}_{teacher}_{data}"),
    Method("teacher_qa", "teacher", ("original-wts-stage1", "qa"), "cot_qa", "original", "{model}_{teacher}_{data}"),
    # stage 2, original W2S: the student on a trained teacher's labels
    Method("original_qa", "student", ("original-wts-stage2", "qa"), "original_labels", "original",
           _TO + "_{type}teacher", eval=("original-wts", "qa"), pgr=True,
           report=(ReportRow("original_qa", "original W2S, qa teacher"),)),
    Method("original_cot", "student", ("original-wts-stage2", "cot"), "original_labels", "original",
           _TO + "_{type}teacher", eval=("original-wts", "cot"), pgr=True, seed_reads_choice=True,
           report=(ReportRow("original_cot", "original W2S, cot teacher"),)),
    Method("original_cascade", "student", ("original-wts-stage2", "cascade"), "original_cascade_labels",
           "original_cascade", _TO, eval=("original-wts", "cascade"), pgr=True,
           report=(ReportRow("original_cascade", "original W2S cascade (via {midlevel})", via="midlevel"),)),
    # stage 2, Alice: single-turn; the cascade's hop 1 (teacher -> mid-level, the first half) and hop 2
    Method("alice", "student", ("ours-wts-stage2", "singleturn"), "alice_final", "ours", _TO,
           eval=("ours-wts", "singleturn"), pgr=True, seed_reads_choice=True, report=(ReportRow("alice", "Alice"),)),
    Method("alice_mid", "student", ("ours-wts-stage2", "cascade1"), "alice_final", "ours_cascade_halfhalf", _TO,
           rows="cascade_first"),
    Method("alice_cascade", "student", ("ours-wts-stage2", "cascade2"), "alice_cascade_final",
           "ours_cascade_halfhalf", _TO, eval=("ours-wts", "cascade"), pgr=True, seed_reads_choice=True,
           report=(ReportRow("alice_cascade", "cascade Alice (via {midlevel})", via="midlevel"),)),
):
    register(_m)

# ---- ablations of Alice's proactive step (docs/ablations.md): training files made by alice.ablations from Alice's
#      stage files; the pipeline plans those named by --ablations; each is reported with its paired difference to Alice
ABLATIONS = {  # --ours-wts-type: (letter, what it changes)
    "no_uncertainty": ("a", "no uncertainty statement in the final prompt"),
    "self_training": ("b", "self-training: the student's zero-shot answers as labels"),
    "majority_vote": ("c", "majority vote: the teacher's largest-cluster answer as every label"),
    "greedy_final": ("d", "greedy final answer"),
    "agreeing_final": ("e", "final answer kept only when it agrees with the teacher's or its zero-shot answer"),
}
for _k, (_letter, _what) in ABLATIONS.items():
    register(Method(f"ablation_{_k}", "student", ("ours-wts-stage2", _k), "alice_ablation", "ours_ablations",
                    _TO + "_{type}", eval=("ours-wts", _k), pgr=True, seed_reads_choice=True, paper=False, versus="alice",
                    report=(ReportRow(f"ablation_{_k}", f"ablation ({_letter}): {_what}"),)))
