"""A whole setting, timed (issue 31): the one command on a settings file, and where its wall time went.

    python bench/setting.py --config bench/configs/setting_gpu.yaml --root /tmp/s --out results/setting_gpu.json  # GPU
    python bench/setting.py --from-root /tmp/real/hotpotqa --out F.json     # a run made before, from its logs

``run``: ``python -m alice.pipeline --config <pipeline_config> --root R [--data-dir D] [pipeline_args]`` in a
subprocess, its console in ``R/pipeline.log``; on a GPU ``nvidia-smi`` is sampled every second meanwhile (the card's
busy share: samples with utilization above 0, and the mean utilization). Both modes then read each step's log under
``R/model_outputs/logs/<setting>/`` and the pipeline's ``[ i/N] step: ok in Xs`` lines:

- ``wall_s``: the step as the pipeline timed it;
- ``work_s``: the work itself: generation (``[generation] ... tokens in Xs``, ``generate_calls`` of them) or the
  training loop (``train_runtime``, ``train_loops``);
- ``startup_s``: the rest (process start and imports, engine or model load, saving, grading), ``wall_s - work_s``;
- ``engine_load_s``: the generation engines' share of it (``[generation] loaded ... in Xs``, a weight refresh of a
  living engine included), with how many engines were made, reused or refreshed.

And the report's accuracies, each compared with the committed results file of the same setting (``--compare``): is
it inside that file's 95% CI. ``critical_path``: the longest chain of steps through their prerequisites, by work
seconds, the floor of any schedule without start-up. One JSON file holds one run per (card, data, command) under
``runs``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from alice import fresh  # noqa: E402
from alice.jsonl import replace_run  # noqa: E402
from alice.stages import common as stage_common  # noqa: E402
from alice.steps import read_outcomes  # noqa: E402

GEN = re.compile(r"^\[generation\] .+?: \d+ prompts x \d+, \d+ tokens in ([\d.]+)s", re.M)
LOAD = re.compile(r"^\[generation\] loaded .+? in ([\d.]+)s", re.M)
TRAIN = re.compile(r"'train_runtime': '?([\d.]+)")


def step_logs(root: Path, pipeline_log: str = "") -> dict[int, Path]:
    """``{step number: its log}``: the pipeline writes step i's log as ``NN_<name>.log`` (NN = i, the name shortened
    when long) under ``model_outputs/logs/<setting>/``; the setting's folder is the one the pipeline's lines name."""
    m = re.search(r"\(log: (\S+)/\d+_[^/]*\.log\)", pipeline_log)
    folders = [root / "model_outputs" / "logs" / Path(m.group(1)).name] if m else []
    folder = next((f for f in folders if f.is_dir()), None)
    pattern = "[0-9]*_*.log" if folder else "*/[0-9]*_*.log"
    return {int(p.name.split("_", 1)[0]): p for p in sorted((folder or root / "model_outputs" / "logs").glob(pattern))}


def analyze(root: Path, pipeline_log: str) -> dict:
    """Each step's wall, work, start-up and engine-load seconds, from the pipeline's lines and the step logs."""
    logs = step_logs(root, pipeline_log)
    steps = {}
    for name, o in read_outcomes(pipeline_log).items():
        if o["status"] == "not finished":
            continue
        i, wall = o["index"], o["s"]
        text = logs[i].read_text(errors="replace").replace("\r", "\n") if i in logs else ""
        gens, trains = GEN.findall(text), TRAIN.findall(text)
        gen, train = sum(float(x) for x in gens), sum(float(x) for x in trains)
        loads = [float(x) for x in LOAD.findall(text)]  # new engines and weight refreshes of living ones
        refreshed = len(re.findall(r"^\[generation\] loaded .+? into the living engine of ", text, re.M))
        work = round(gen + train, 1)
        steps[name] = {"status": o["status"], "wall_s": wall, "work_s": work,
                       "startup_s": round(max(wall - work, 0.0), 1), "engine_load_s": round(sum(loads), 1),
                       "generate_calls": len(gens), "train_loops": len(trains),
                       "engines": {"loaded": len(loads) - refreshed, "reused": text.count("reusing the loaded engine"),
                                   "refreshed": refreshed}}
    total = {k: round(sum(s[k] for s in steps.values()), 1) for k in ("wall_s", "work_s", "startup_s", "engine_load_s")}
    m = re.search(r"all steps finished in (\d+)s", pipeline_log)
    return {"steps": steps, "step_seconds": total, "pipeline_s": int(m.group(1)) if m else None,
            "failed_steps": [k for k, v in steps.items() if v["status"] != "ok"]}


def critical_path(command: str | None, steps: dict) -> dict | None:
    """The longest chain of steps through the plan's prerequisites (``Step.after``, the plan rebuilt from the recorded
    command), by each step's measured work seconds (``alice.schedule.chains``), with its wall seconds: with no
    start-up at all and unlimited overlap, the setting still takes ``work_s``. ``complete``: every step on the plan
    was timed (a step that did not run counts 0, so the figure is then a lower bound). None without a command that
    plans."""
    from alice import pipeline, schedule
    from alice.pipeline_options import options_from_command

    options = options_from_command(command) if command else None
    if options is None:
        return None
    try:
        planned = pipeline.plan(options)
    except (Exception, SystemExit):  # noqa: BLE001 - a command this checkout no longer plans: no figure
        return None
    length, after = schedule.chains(planned, lambda st: steps.get(st.name, {}).get("work_s", 0.0))
    start = max(range(len(planned)), key=lambda k: length[k])
    chain, i = [], start
    while i is not None:
        chain.append(planned[i].name)
        i = after[i]
    return {"steps": chain, "work_s": round(length[start], 1),
            "wall_s": round(sum(steps.get(n, {}).get("wall_s") or 0.0 for n in chain), 1),
            "complete": all(st.name in steps and steps[st.name]["status"] == "ok" for st in planned)}


def accuracies(root: Path, compare: Path | None) -> dict:
    """The report's accuracy per row (key: accuracy, CI, n), and whether each lies inside the committed file's CI."""
    reports = sorted(root.glob("model_outputs/report/*.json"))
    if not reports:
        return {}
    rows = {r["key"]: r for r in json.loads(reports[-1].read_text())["rows"] if not r.get("missing")}
    old = {}
    if compare is not None and compare.is_file():
        old = {r["key"]: r for r in json.loads(compare.read_text())["rows"] if not r.get("missing")}
    out = {}
    for k, r in rows.items():
        e = {"accuracy": r["accuracy"], "ci95": r.get("ci95"), "n": r.get("n")}
        if k in old:
            lo, hi = old[k]["ci95"]
            e.update(committed=old[k]["accuracy"], committed_ci95=[lo, hi], inside_committed_ci=lo <= r["accuracy"] <= hi)
        out[k] = e
    return out


class CardSampler(threading.Thread):
    """``nvidia-smi`` every ``every`` seconds while the run lasts: utilization (%) and memory used (MiB)."""

    def __init__(self, every: float = 1.0):
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
                util, mem = (float(x) for x in out.stdout.splitlines()[0].split(","))
                self.samples.append((util, mem))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
            self.stop.wait(self.every)

    def summary(self) -> dict | None:
        if not self.samples:
            return None
        util = [u for u, _ in self.samples]
        return {"samples": len(util), "busy_share": round(sum(u > 0 for u in util) / len(util), 3),
                "mean_utilization": round(sum(util) / len(util) / 100, 3),
                "peak_memory_mib": max(m for _, m in self.samples)}


def device() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    import platform

    return f"CPU: {platform.processor() or platform.machine()}"


def run(config: Path, root: Path, data_dir: str | None, extra: list[str]) -> tuple[list[str], float, dict | None]:
    """The pipeline on ``config`` under ``root`` (a fresh root: what is there is a previous run's), timed."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    argv = [sys.executable, "-m", "alice.pipeline", "--config", str(config), "--root", str(root),
            *(["--data-dir", data_dir] if data_dir else []), *extra]
    sampler = CardSampler() if shutil.which("nvidia-smi") else None
    if sampler:
        sampler.start()
    t0 = time.time()
    with open(root / "pipeline.log", "w") as log:
        rc = subprocess.run(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.time() - t0
    if sampler:
        sampler.stop.set()
        sampler.join()
    if rc != 0:
        print(f"the pipeline exited with {rc}: see {root / 'pipeline.log'}", file=sys.stderr)
    return argv, wall, sampler.summary() if sampler else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="this benchmark's YAML (bench/configs/setting_gpu.yaml)")
    p.add_argument("--pipeline-config", default=None, help="the pipeline's settings file")
    p.add_argument("--pipeline-args", nargs=argparse.REMAINDER, default=[], help="more pipeline flags (last)")
    p.add_argument("--compare", default=None, help="the committed results file of the same setting")
    p.add_argument("--root", default=None, help="where the run goes (emptied first)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--from-root", default=None, help="analyze a run made before (its root; pipeline.log in it or "
                                                     "--pipeline-log)")
    p.add_argument("--pipeline-log", default=None)
    p.add_argument("--note", default=None, help="what the run is, stored with its figures (e.g. a run that stopped early)")
    p.add_argument("--out", required=True)
    a = stage_common.parse_args(p, argv)  # a --config file's values are defaults: a flag given overrides them
    if a.from_root:
        root = Path(a.from_root)
        log = Path(a.pipeline_log) if a.pipeline_log else root / "pipeline.log"
        if not log.is_file():
            p.error(f"{log} not found: pass --pipeline-log (the pipeline's console output)")
        command = (root / "command.txt").read_text().strip() if (root / "command.txt").is_file() else None
        wall, card, made = None, None, "analyzed from the run's logs (bench/setting.py --from-root)"
        if (root / "start").is_file() and (root / "end").is_file():
            wall = int((root / "end").read_text()) - int((root / "start").read_text())
        dev = (root / "device.txt").read_text().strip() if (root / "device.txt").is_file() else None
        commit = (root / "commit.txt").read_text().strip() if (root / "commit.txt").is_file() else None
    else:
        if not (a.pipeline_config and a.root):
            p.error("--pipeline-config and --root are needed (or --config naming them), or --from-root")
        root = Path(a.root)
        argv_run, wall, card = run(Path(a.pipeline_config), root, a.data_dir, list(a.pipeline_args or []))
        command = " ".join(["python -m alice.pipeline", *argv_run[3:]])
        log, dev, commit, made = root / "pipeline.log", device(), fresh.git_commit(ROOT), "bench/setting.py"
    text = log.read_text(errors="replace")
    settings = {}
    if command:
        for flag in ("data", "train-limit", "num-samples", "jobs", "config"):
            m = re.search(rf"--{flag} (\S+)", command)
            settings[flag.replace("-", "_")] = m.group(1) if m else None
    if a.pipeline_config:
        import yaml

        cfg = yaml.safe_load(Path(a.pipeline_config).read_text()) or {}
        for k in ("data", "train_limit", "num_samples", "jobs"):
            settings[k] = settings.get(k) or cfg.get(k)
    entry = {"command": command, "commit": commit, "device": dev, "made_by": made,
             "data": settings.get("data"), "train_limit": settings.get("train_limit"),
             "num_samples": settings.get("num_samples"), "jobs": settings.get("jobs"),
             "wall_s": round(wall, 1) if wall is not None else None, "card": card,
             **analyze(root, text), "accuracy": accuracies(root, Path(a.compare) if a.compare else None),
             **({"note": a.note} if a.note else {})}
    entry["critical_path"] = critical_path(command, entry["steps"])
    replace_run(a.out, entry, key=lambda r: (r.get("device"), r.get("data"), r.get("command")))
    s = entry["step_seconds"]
    print(f"{entry['data']}: wall {entry['wall_s']} s; step seconds {s['wall_s']} = work {s['work_s']} + start-up "
          f"{s['startup_s']} (engine loads {s['engine_load_s']}); failed: {entry['failed_steps'] or 'none'}"
          + (f"; card busy {card['busy_share']:.0%}" if card else ""))
    cp = entry["critical_path"]
    if cp:
        print(f"critical path ({len(cp['steps'])} steps{'' if cp['complete'] else ', some not run: a lower bound'}): "
              f"work {cp['work_s']} s, wall {cp['wall_s']} s: {' -> '.join(cp['steps'])}")
    print(f"wrote {a.out}")
    return 0 if not entry["failed_steps"] else 1


if __name__ == "__main__":
    sys.exit(main())
