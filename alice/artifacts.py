"""The one table of artifacts: which command makes which file or model folder.

Each function names one kind of artifact of a setting and returns an ``Artifact``: where it lives (``alice.paths``)
and the stage script + flags that make it. Everything that needs "what makes X" reads this table: the missing-input
hints of every stage (``jsonl.require``: "run `...` first"), SFT's job resolution, evaluation's targets, the original
W2S labeller's plan and the pipeline's plan (``alice.pipeline``), which runs exactly these commands.

A trained model is one entry of the method registry (``alice.methods``): ``trained`` makes its artifact, the folder
declared there and the command in the paper's flag spellings (``SFT.py --method ours-wts-stage2 --ours-wts-type
cascade1``). Label types have one spelling inside the library (``cascade1`` / ``cascade2``); the original labeller's
flag keeps the paper's ``--type cascade_1|cascade_2`` (``methods.canonical_label_type``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from . import methods
from .paths import Layout, eval_run_name

# The stage scripts, relative to the repository root.
SFT = "training/SFT.py"
COT = "cot/cot_generate_filter.py"
ORIGINAL = "W2SG_pipeline/original/original_weak_to_strong.py"
OURS = "W2SG_pipeline/ours/new_weak_to_strong_{}.py"  # also {} = ablation: the ablations' training files
EVAL = "evaluation.py"
REPORT = "report.py"
ALICE_STAGES = ("cluster", "uncertainty", "zeroshot", "final")

canonical_type = methods.canonical_label_type


def location(root=None, data_dir=None) -> list[str]:
    """``--data-dir D --root R`` (those given; a root of '.' is the default)."""
    out = []
    if data_dir:
        out += ["--data-dir", str(data_dir)]
    if root and str(root) != ".":
        out += ["--root", str(root)]
    return out


@dataclass(frozen=True)
class Artifact:
    """One output of a setting and the command that makes it: ``python <script> --model M --data D <flags>``."""

    path: Path
    script: str
    model: str
    data: str
    flags: tuple[str, ...]

    def argv(self, python: str = "python", where: list[str] | None = None, extra: list[str] | None = None) -> list[str]:
        """The command as a list, ``where`` (``location``) right after ``--model --data`` as the pipeline runs it."""
        return [python, self.script, "--model", self.model, "--data", self.data, *(where or []), *self.flags,
                *(extra or [])]

    def command(self, root=None, data_dir=None) -> str:
        """The command as a user types it (for 'run X first' messages), ``--data-dir``/``--root`` last."""
        parts = ["python", self.script, "--model", self.model, "--data", self.data, *self.flags, *location(root, data_dir)]
        return " ".join(a if a.startswith("<") and a.endswith(">") else shlex.quote(a) for a in parts)  # <x>: fill in


def _a(path, script, model, data, *flags) -> Artifact:
    return Artifact(Path(path), script, model, data, tuple(str(f) for f in flags))


# ---- step 1: CoT ----------------------------------------------------------------------------------------
def cot(L: Layout, model: str, data: str, teacher: str) -> Artifact:
    """The teacher's correct chain-of-thought on the teacher half (``*_cot_correct.jsonl``)."""
    return _a(L.cot_correct(model, teacher, data), COT, model, data, "--teacher", teacher)


# ---- trained models: one registry entry each (alice.methods) --------------------------------------------
def trained(L: Layout, method, model: str, data: str, teacher: str | None = None,
            student: str | None = None) -> Artifact:
    """The model ``method`` (a ``methods.Method`` or its key) trains: its folder and ``SFT.py`` command, the flags in
    the paper's spellings (``--teacher``/``--student`` as its folder name uses them, ``--method``, the type flag)."""
    m = methods.get(method) if isinstance(method, str) else method
    flags = []
    if "{teacher}" in m.name:
        flags += ["--teacher", teacher]
    if "{student}" in m.name:
        flags += ["--student", student]
    flags += ["--method", m.sft[0]]
    if m.sft_type_flag:
        flags += [m.sft_type_flag, m.sft[1]]
    return _a(L.trained(m, model, data, teacher, student), SFT, model, data, *flags)


def base_model(L: Layout, model: str, data: str, student: str) -> Artifact:
    """A model trained on the ground truth of the W2S part (the weak and strong baselines)."""
    return trained(L, "base", model, data, student=student)


def teacher_model(L: Layout, model: str, data: str, teacher: str, type_: str) -> Artifact:
    """The stage-1 teacher trained on CoT (``cot``: also Alice's sampler) or on q-a pairs (``qa``)."""
    return trained(L, "teacher_qa" if type_ == "qa" else "teacher_cot", model, data, teacher=teacher)


def original_student(L: Layout, model: str, data: str, teacher: str, student: str, type_: str) -> Artifact:
    """A student trained on original-W2S labels: ``qa``/``cot`` labels of the W2S part, or ``cascade`` (a hop of the
    baseline cascade; ``teacher`` is that hop's labeller)."""
    return trained(L, methods.by_sft_flags("original-wts-stage2", original_type=type_), model, data, teacher, student)


def alice_student(L: Layout, model: str, data: str, teacher: str, student: str, type_: str = "singleturn") -> Artifact:
    """A student trained on an Alice training file: ``singleturn``, or the cascade's ``cascade1`` (teacher -> mid-level:
    ``student`` is the mid-level) / ``cascade2`` (mid-level -> student: ``teacher`` is the mid-level)."""
    return trained(L, methods.by_sft_flags("ours-wts-stage2", ours_type=canonical_type(type_)), model, data, teacher,
                   student)


# ---- original W2S labels ----------------------------------------------------------------------------------
def original_labels(L: Layout, model: str, data: str, teacher: str, type_: str, midlevel: str | None = None) -> Artifact:
    """Labels by a trained teacher: ``qa``/``cot`` (the W2S part), ``cascade1`` (the cot teacher labels the cascade's
    first half) or ``cascade2`` (the mid-level model trained on those labels labels the second half)."""
    type_ = canonical_type(type_)
    if type_ in ("qa", "cot"):
        return _a(L.original_labels(model, teacher, data, type_), ORIGINAL, model, data, "--teacher", teacher,
                  "--type", type_)
    if type_ == "cascade1":
        return _a(L.original_cascade_labels(model, teacher, data), ORIGINAL, model, data, "--teacher", teacher,
                  "--type", "cascade_1")
    return _a(L.original_cascade_labels(model, midlevel, data), ORIGINAL, model, data, "--teacher", teacher,
              "--midlevel", midlevel, "--type", "cascade_2")


def original_labeller(L: Layout, model: str, data: str, teacher: str, type_: str,
                      midlevel: str | None = None) -> Artifact:
    """The trained model that makes ``original_labels(type_)``."""
    type_ = canonical_type(type_)
    if type_ == "qa":
        return teacher_model(L, model, data, teacher, "qa")
    if type_ in ("cot", "cascade1"):
        return teacher_model(L, model, data, teacher, "cot")
    return original_student(L, model, data, teacher, midlevel, "cascade")


# ---- Alice ------------------------------------------------------------------------------------------------
def alice_stage(L: Layout, stage: str, model: str, data: str, teacher: str, student: str,
                midlevel: str | None = None) -> Artifact:
    """The output of one Alice stage. Single-turn when ``midlevel`` is None (the teacher samples); cascade otherwise
    (the mid-level model trained in hop 1 samples, files under ``ours_cascade_halfhalf``)."""
    cascade = midlevel is not None
    sampler = midlevel if cascade else teacher
    path = {
        "cluster": lambda: L.sampled_clustered(model, sampler, data, cascade),
        "uncertainty": lambda: L.uncertainty(model, sampler, data, cascade),
        "zeroshot": lambda: L.zeroshot(model, sampler, student, data, cascade),
        "final": lambda: L.alice_train(model, sampler, student, data, cascade),
    }[stage]()
    method = ("--method", "cascade", "--midlevel", midlevel) if cascade else ("--method", "singleturn")
    return _a(path, OURS.format(stage), model, data, "--teacher", teacher, "--student", student, *method)


def alice_ablation(L: Layout, name: str, model: str, data: str, teacher: str, student: str) -> Artifact:
    """The training file of one ablation of single-turn Alice (``alice.ablations``), made from its stage files."""
    return _a(L.alice_ablation(model, teacher, student, data, name), OURS.format("ablation"), model, data,
              "--teacher", teacher, "--student", student, "--method", "singleturn", "--ablation", name)


def alice_sampler(L: Layout, model: str, data: str, teacher: str, midlevel: str | None = None) -> Artifact:
    """The trained model whose samples Alice clusters: the stage-1 CoT teacher, or (cascade) the hop-1 mid-level."""
    if midlevel is None:
        return teacher_model(L, model, data, teacher, "cot")
    return alice_student(L, model, data, teacher, midlevel, "cascade1")


# ---- evaluation and report --------------------------------------------------------------------------------
def evaluation(L: Layout, model: str, data: str, student: str, method: str, teacher: str | None = None,
               original_wts_type: str | None = None, ours_wts_type: str | None = None) -> Artifact:
    """An evaluation summary (``model_outputs/eval/<data>/<run>_summary.json``)."""
    flags = ["--student", student, "--method", method]
    if teacher:
        flags += ["--teacher", teacher]
    if original_wts_type:
        flags += ["--original-wts-type", original_wts_type]
    if ours_wts_type:
        flags += ["--ours-wts-type", ours_wts_type]
    run = eval_run_name(model, student, method, teacher, original_wts_type, ours_wts_type)
    return _a(L.eval_summary(data, run), EVAL, model, data, *flags)


def evaluated_model(L: Layout, model: str, data: str, student: str, method: str, teacher: str | None = None,
                    original_wts_type: str | None = None, ours_wts_type: str | None = None) -> Artifact | None:
    """The trained model an evaluation scores (None for ``naive``: the untrained hub model). For the cascade types
    ``teacher`` is the mid-level model (the last hop's teacher)."""
    m = methods.by_eval_flags(method, original_wts_type, ours_wts_type)
    if m.trains is None:
        return None
    return trained(L, m, model, data, teacher, student)
