"""Every file the stages read and write, named as the paper's scripts name them.

``Layout(root)`` roots them at ``root`` (the repository root by default, where the README's commands run).
``model`` is the family name (``qwen2.5``), the sizes are ``registry.model_tag`` names (``1.5B``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import methods
from .registry import model_tag

ROOT_ENV = "ALICE_ROOT"
PACKAGE_HOME = Path(__file__).resolve().parent.parent  # the folder holding this ``alice`` package
TOP_FOLDERS = ("data", "model_outputs")  # every output of a root lives under one of these (Layout.data, .models)


def _tag(size: str) -> str:
    return model_tag(size)


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def default(cls, root: str | os.PathLike | None = None) -> "Layout":
        """``root``, else $ALICE_ROOT, else the current directory."""
        return cls(Path(root or os.environ.get(ROOT_ENV) or "."))

    @staticmethod
    def root_of(path: str | os.PathLike) -> Path | None:
        """The root an output belongs to: the parent of its nearest ``data/`` or ``model_outputs/`` folder (resolved);
        None for a path outside any root (e.g. SFT's ``--output-dir``). Records name inputs relative to it, so a
        moved or copied root keeps them valid."""
        p = Path(os.path.abspath(os.path.expanduser(str(path))))
        for parent in p.parents:
            if parent.name in TOP_FOLDERS:
                return Path(os.path.realpath(parent.parent))
        return None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def models(self) -> Path:
        return self.root / "model_outputs"

    # ---- step 1: CoT --------------------------------------------------------------------------------
    def cot(self, model: str, teacher: str, data: str) -> Path:
        return self.data / "CoT" / f"{model}_{_tag(teacher)}_{data}_cot.jsonl"

    def cot_correct(self, model: str, teacher: str, data: str) -> Path:
        return self.data / "CoT" / f"{model}_{_tag(teacher)}_{data}_cot_correct.jsonl"

    # ---- step 3: original W2S labels ------------------------------------------------------------------
    def original_labels(self, model: str, teacher: str, data: str, type_: str) -> Path:
        """Labels of the W2S part by the stage-1 teacher trained on ``type_`` (qa or cot)."""
        return self.data / "original" / f"{model}_{_tag(teacher)}_{data}_{type_}teacher.jsonl"

    def original_cascade_labels(self, model: str, labeler: str, data: str) -> Path:
        """Cascade baseline: labels of one W2S half by ``labeler`` (the teacher for hop 1, the mid-level for hop 2)."""
        return self.data / "original_cascade" / data / f"{model}_{_tag(labeler)}_{data}.jsonl"

    # ---- step 4/5: Alice ------------------------------------------------------------------------------
    def _ours_dir(self, data: str, cascade: bool) -> Path:
        return self.data / ("ours_cascade_halfhalf" if cascade else "ours") / data

    def sampled_clustered(self, model: str, teacher: str, data: str, cascade: bool = False) -> Path:
        """``teacher`` is the model that samples: the teacher (single-turn) or the mid-level model (cascade)."""
        return self._ours_dir(data, cascade) / f"{model}_{_tag(teacher)}_{data}_sampled_clustered.jsonl"

    def uncertainty(self, model: str, teacher: str, data: str, cascade: bool = False) -> Path:
        return self._ours_dir(data, cascade) / f"{model}_{_tag(teacher)}_{data}_uncertainty.jsonl"

    def zeroshot(self, model: str, teacher: str, student: str, data: str, cascade: bool = False) -> Path:
        # Keyed by teacher too (the seed keyed it by student only, so two teachers overwrote each other).
        return self._ours_dir(data, cascade) / f"{model}_{_tag(teacher)}_to_{_tag(student)}_{data}_zeroshot.jsonl"

    def alice_train(self, model: str, teacher: str, student: str, data: str, cascade: bool = False) -> Path:
        """The student's training file: 'original' rows (one cluster) and 'new' rows (proactive answers)."""
        return self._ours_dir(data, cascade) / f"{model}_{_tag(teacher)}_to_{_tag(student)}_{data}.jsonl"

    def alice_ablation(self, model: str, teacher: str, student: str, data: str, name: str) -> Path:
        """The training file of one ablation of single-turn Alice (``alice.ablations``, docs/ablations.md)."""
        return self._ours_dir(data, False) / "ablations" / f"{model}_{_tag(teacher)}_to_{_tag(student)}_{data}_{name}.jsonl"

    # ---- trained models: each method's folder is declared in its registry entry (alice.methods) -------------
    def trained(self, method, model: str, data: str, teacher: str | None = None, student: str | None = None) -> Path:
        """The folder ``method`` (a ``methods.Method`` or its key) trains into: ``model_outputs/<folder>/<name>``."""
        m = methods.get(method) if isinstance(method, str) else method
        if m.folder is None:
            raise ValueError(f"method {m.key!r} trains no model")
        name = m.name.format(model=model, data=data, teacher=_tag(teacher) if teacher else "",
                             student=_tag(student) if student else "", type=m.sft[1] if m.sft else "")
        return self.models / m.folder / name

    def base_model(self, model: str, student: str, data: str) -> Path:
        return self.trained("base", model, data, student=student)

    def teacher_qa_model(self, model: str, teacher: str, data: str) -> Path:
        """original-wts-stage1 --original-wts-type qa."""
        return self.trained("teacher_qa", model, data, teacher=teacher)

    def teacher_cot_model(self, model: str, teacher: str, data: str) -> Path:
        """ours-wts-stage1 (also the 'cot' teacher of the original W2S baseline)."""
        return self.trained("teacher_cot", model, data, teacher=teacher)

    def teacher_model(self, model: str, teacher: str, data: str, type_: str) -> Path:
        """The stage-1 teacher trained on ``type_`` ('qa' or 'cot')."""
        if type_ == "qa":
            return self.teacher_qa_model(model, teacher, data)
        return self.teacher_cot_model(model, teacher, data)

    def original_student_model(self, model: str, teacher: str, student: str, data: str, type_: str) -> Path:
        """original-wts-stage2: ``type_`` in qa, cot, cascade."""
        return self.trained(methods.by_sft_flags("original-wts-stage2", original_type=type_), model, data, teacher, student)

    def ours_student_model(self, model: str, teacher: str, student: str, data: str, type_: str = "singleturn") -> Path:
        """ours-wts-stage2: singleturn, or cascade1 (teacher -> mid) / cascade2 (mid -> student)."""
        return self.trained(methods.by_sft_flags("ours-wts-stage2", ours_type=type_), model, data, teacher, student)

    # ---- evaluation and report ------------------------------------------------------------------------
    def eval_dir(self, data: str) -> Path:
        return self.models / "eval" / data

    def eval_predictions(self, data: str, run: str) -> Path:
        return self.eval_dir(data) / f"{run}.jsonl"

    def eval_summary(self, data: str, run: str) -> Path:
        return self.eval_dir(data) / f"{run}_summary.json"

    def report(self, model: str, teacher: str, student: str, data: str, suffix: str) -> Path:
        return self.models / "report" / f"{model}_{_tag(teacher)}_to_{_tag(student)}_{data}{suffix}"


def eval_run_name(
    model: str,
    student: str,
    method: str,
    teacher: str | None = None,
    original_wts_type: str | None = None,
    ours_wts_type: str | None = None,
) -> str:
    """One name per evaluated model, e.g. ``qwen2.5_0.5B_to_1.5B_ours-wts-singleturn``."""
    s = _tag(student)
    if method in ("naive", "base"):
        return f"{model}_{s}_{method}"
    kind = original_wts_type if method == "original-wts" else ours_wts_type
    return f"{model}_{_tag(teacher)}_to_{s}_{method}-{kind}"


def child_env(**extra: str) -> dict:
    """This process's environment for a child that imports this very ``alice`` package (from where it is installed or
    checked out, whatever else is on the path), with ``extra`` set on top."""
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=str(PACKAGE_HOME) + (os.pathsep + path if path else ""), **extra)
