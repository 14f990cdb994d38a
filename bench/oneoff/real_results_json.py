"""Issue 14: turn what `bench/oneoff/gpu_real_results.sh pack` brought back into the committed results file.

    python bench/oneoff/real_results_json.py real_gsm8k.tar.gz --data-dir ../shared/offline/data
    # -> results/gsm8k_qwen2.5-coder_0.5B_to_1.5B.json (+ .md and .png beside it)

The tarball holds one dataset's --root (stage JSONL, evaluations, logs, training records, no weights) and the run's
command, commit, device and start/end times. The report is rebuilt here with the project's own `alice.report.build`
(accuracy with 95% CIs, PGR with CIs, the paired Alice - original W2S (cot) difference and the diagnostics, graded
against the ground truth in --data-dir), and written with the provenance the issue asks for. The stored test responses
are graded again with this checkout's graders first (as a rerun of evaluation.py does); the provenance names the
commit that graded and every run whose accuracy that changed.
"""

from __future__ import annotations

import argparse
import json
import re
import tarfile
import tempfile
from pathlib import Path

from alice import data as data_mod
from alice import fresh
from alice import report
from alice.evaluate import regrade
from alice.paths import Layout
from alice.pipeline_options import options_from_command
from alice.steps import read_outcomes

REPO = Path(__file__).resolve().parents[2]


def _read(root: Path, name: str) -> str | None:
    p = root / name
    return p.read_text().strip() if p.is_file() else None



def regrade_all(root: Path, data: str, data_dir: str | None) -> dict:
    """Grade every stored evaluation of the run again with the current graders (``alice.evaluate.regrade``, what a
    rerun of evaluation.py does); ``{run: [accuracy as run, accuracy now]}`` for the runs whose accuracy changed."""
    changed, rows = {}, None
    for summary_path in sorted((root / "model_outputs" / "eval" / data).glob("*_summary.json")):
        summary = json.loads(summary_path.read_text())
        local = summary_path.parent / Path(summary.get("predictions", "")).name  # recorded at the device's --root
        if not local.exists():
            continue
        rows = rows if rows is not None else data_mod.load_test(data, data_dir)
        before = summary["accuracy"]
        after = regrade(data, dict(summary, predictions=str(local)), rows, summary_path)["accuracy"]
        if after != before:
            changed[summary.get("run", summary_path.stem)] = [before, after]
    return changed


def training_records(root: Path) -> dict:
    """``{model folder: what its train_config.json says of memory and stability}``: the plan it trained at (micro-batch x
    accumulation, estimate), the measured peak, out-of-memory retries, steps skipped for non-finite gradient norms."""
    out = {}
    for cfg in sorted((root / "model_outputs").glob("*/*/train_config.json")):
        t = json.loads(cfg.read_text())
        plan = t.get("memory_plan") or {}
        peak = t.get("peak_gpu_memory_gib")
        out[cfg.parent.relative_to(root).as_posix()] = {
            "rows": t.get("rows"), "plan": plan.get("describe"), "estimate_gib": plan.get("estimate_gib"),
            "peak_gpu_memory_gib": peak,
            "estimate_over_peak": round(plan["estimate_gib"] / peak, 2) if plan.get("estimate_gib") and peak else None,
            "out_of_memory_retries": t.get("out_of_memory_retries"),
            "skipped_nonfinite_steps": t.get("skipped_nonfinite_steps"),
            "full_determinism": t.get("full_determinism"), "train_wall_time_s": t.get("train_wall_time_s")}
    return out


def rootless(rep: dict, root: Path) -> dict:
    """The report with the files it names under ``root`` (the temporary folder the pack was extracted to, a different
    one each time) named under ``<run root>`` instead."""
    return json.loads(re.sub(re.escape(str(root)) + r'(?=[/"])', "<run root>", json.dumps(rep)))


def setting_of(command: str) -> dict:
    """The family, teacher, mid-level and student the recorded pipeline command ran (empty when it does not parse)."""
    o = options_from_command(command)
    return {"model": o.model, "teacher": o.teacher, "midlevel": o.midlevel, "student": o.student} if o else {}


def build(tarball: Path, data_dir: str | None, family: str | None = None, teacher: str | None = None,
          student: str | None = None, midlevel: str | None = None, note: str | None = None) -> dict:
    """The report of a packed run; the setting (family, teacher, mid-level, student) is the recorded command's unless
    given."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with tarfile.open(tarball) as tf:
            tf.extractall(root, filter="data")
        command = _read(root, "command.txt") or ""
        data = command.split("--data ", 1)[1].split()[0] if "--data " in command else None
        if data is None:
            raise SystemExit(f"{tarball}: no command.txt naming --data (was it made by gpu_real_results.sh pack?)")
        # the pack leaves the trained weights out: a model folder stands for what its own record fingerprinted
        with fresh.weights_packed_out():
            changed = regrade_all(root, data, data_dir)
            ran = setting_of(command)
            family, teacher = family or ran.get("model", "qwen2.5-coder"), teacher or ran.get("teacher", "0.5B")
            student, midlevel = student or ran.get("student", "1.5B"), midlevel or ran.get("midlevel")
            rep = report.build(Layout.default(root), family, teacher, student, data, midlevel, data_dir)
        start, end = _read(root, "start"), _read(root, "end")
        steps = {k: {"status": v["status"], "s": v["s"]} for k, v in read_outcomes(_read(root, "pipeline.log") or "").items()}
        trainings = training_records(root)
        rep["provenance"] = {
            "command": command,
            "commit": _read(root, "commit.txt"),
            "device": _read(root, "device.txt"),
            "exit_code": _read(root, "rc"),
            "wall_s": int(end) - int(start) if start and end else None,
            "finished": _read(root, "rc") == "0",
            "steps": steps,  # each step's outcome and wall seconds, from the pipeline's log
            "failed_steps": [k for k, v in steps.items() if v["status"] != "ok"],
            "trainings": trainings,  # each training's memory plan, measured peak, OOM retries and skipped steps
            "source": tarball.name,
            # the stored test responses are graded again with this checkout's graders (as evaluation.py does)
            "graded_with_commit": fresh.git_commit(),
            "regraded_accuracy_changed": changed,
        }
        rep = rootless(rep, root)
        if note:  # what the packed files cannot say (e.g. a run resumed by a second launch: wall_s is the last one's)
            rep["provenance"]["note"] = note
        return rep


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tarball", type=Path)
    ap.add_argument("--data-dir", default=None, help="ground truth for the diagnostics (default: the Hub)")
    ap.add_argument("--model", default=None, help="default: the recorded command's (as --teacher, --midlevel, --student)")
    ap.add_argument("--teacher", default=None)
    ap.add_argument("--midlevel", default=None)
    ap.add_argument("--student", default=None)
    ap.add_argument("--out-dir", type=Path, default=REPO / "results")
    ap.add_argument("--note", default=None, help="recorded as provenance.note (what the packed files cannot say)")
    a = ap.parse_args(argv)
    rep = build(a.tarball, a.data_dir, a.model, a.teacher, a.student, a.midlevel, a.note)
    from alice.registry import model_tag

    sizes = [rep.get(k) for k in ("teacher", "midlevel", "student") if rep.get(k)]
    stem = a.out_dir / f"{rep['data']}_{rep.get('family') or a.model}_{'_to_'.join(model_tag(x) for x in sizes)}"
    a.out_dir.mkdir(parents=True, exist_ok=True)
    path = {ext: Path(f"{stem}.{ext}") for ext in ("json", "md", "png")}  # (with_suffix would eat ".5B")
    path["json"].write_text(json.dumps(rep, indent=1))
    path["md"].write_text(f"# {report.title(rep)}\n\n" + "\n".join(report.lines(rep, markdown=True)) + "\n")
    report.plot(rep, path["png"])
    print("\n".join(report.lines(rep)))
    print(f"wrote {stem}.json/.md/.png")
    return rep


if __name__ == "__main__":
    main()
