"""How long a setting would take on one card under the pipeline's --jobs scheduler (alice/schedule.py), from step
times measured before: the real scheduler runs the setting's real plan (steps, prerequisites, each step's share of
the card) with each step replaced by a sleep of its measured time, sped up. Planning a GPU hold (issue 31: does the
gsm8k setting with its ablations fit in one?), and comparing --jobs or card sizes, without the GPU.

    python bench/schedule_sim.py --times results/setting_gpu.json --command-of 2 --card-gib 73.3 --jobs 2 3 4 \\
        --rows-root RUN --data-dir ../shared/offline/data --out results/schedule_sim.json

Step times: the measured run's step wall seconds (``--times``: a bench/setting.py results file; the first run that
has the step, ``--command-of`` first); a step none of them ran takes the median of the measured steps of its kind
(training / generating / other). Shares: each generating step's as the pipeline plans it; a training step's from its
rows when ``--rows-root`` holds them (a packed run: the plan the step makes alone on the card,
``alice.stages.train.planned_gib``), else the plan for rows of max length. The figure is a model: steps on a shared
card slow each other down, which a sleep does not.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alice import pipeline, schedule  # noqa: E402
from alice.hardware import HARDWARE_ENV, parse_hardware  # noqa: E402
from alice.plan import USABLE  # noqa: E402
from alice.pipeline_options import options_from_command  # noqa: E402
from alice.stages import train  # noqa: E402


def kind(st) -> str:
    return "train" if st.trains else ("generate" if st.model else "other")


def measured(runs: list[dict], first: int) -> dict[str, float]:
    """step name -> wall seconds, the run ``first`` before the others."""
    out: dict[str, float] = {}
    for r in [runs[first], *runs[:first], *runs[first + 1:]]:
        for name, s in r.get("steps", {}).items():
            out.setdefault(name, float(s["wall_s"]))
    return out


def simulate(steps, seconds: dict[str, float], jobs: int, card_gib: float, speedup: float, work: Path) -> dict:
    """Run the scheduler over ``steps`` with sleeps of ``seconds[name] / speedup``; the start and end of each step and
    the makespan, in the measured run's seconds."""
    times = work / f"times_{jobs}_{card_gib}.txt"
    fake = work / "sleep_step"
    fake.write_text(f'#!/bin/sh\nwhile [ $# -gt 2 ]; do shift; done\necho "start $1 $(date +%s.%N)" >> {times}\n'
                    f'sleep $2\necho "end $1 $(date +%s.%N)" >> {times}\n')
    fake.chmod(0o755)
    sim = []
    for k, st in enumerate(steps):
        tag = f"s{k}"
        script = pipeline.SFT if st.trains else "evaluation.py"
        sim.append(dataclasses.replace(st, argv=[str(fake), script, tag, f"{seconds[st.name] / speedup:.3f}"],
                                       outputs=[], refine=None, launcher=[], stage=None))
    t0 = time.time()
    schedule.POLL_S = 0.002  # the scheduler's poll, sped up with the steps
    rc = schedule.execute_parallel(sim, work / f"logs_{jobs}_{card_gib}", jobs, card_gib=card_gib)
    spans: dict[str, list[float]] = {}
    for line in times.read_text().splitlines():
        what, tag, t = line.split()
        spans.setdefault(tag, []).append((float(t) - t0) * speedup)
    return {"jobs": jobs, "card_gib": card_gib, "rc": rc,
            "makespan_s": round(max(v[-1] for v in spans.values()), 0),
            "steps": {st.name: [round(x) for x in spans.get(f"s{k}", [])] for k, st in enumerate(steps)}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--times", type=Path, required=True, help="a bench/setting.py results file (its runs' step times)")
    p.add_argument("--command-of", type=int, default=0, help="the run (index in --times) whose command is simulated")
    p.add_argument("--command", default=None,
                   help="simulate this pipeline command instead of that run's (e.g. with other flags); step times as above")
    p.add_argument("--card-gib", type=float, nargs="+", required=True, help="what steps may use of the card (GiB)")
    p.add_argument("--jobs", type=int, nargs="+", default=[3])
    p.add_argument("--rows-root", default=None, help="a run's root holding its stage files (training steps' rows)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--kv-cache-gib", type=float, nargs="+", default=[None],
                   help="simulate the command with each of these --kv-cache-gib for every engine (its share of the card)")
    p.add_argument("--speedup", type=float, default=20.0)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    runs = json.loads(a.times.read_text())["runs"]
    command = a.command or runs[a.command_of]["command"]
    if a.kv_cache_gib != [None] and not re.search(r"--kv-cache-gib [0-9.]+", command):
        p.error("the simulated command gives its engines no --kv-cache-gib to change")
    seconds = measured(runs, a.command_of)
    results = []
    for kv, card in [(kv, card) for kv in a.kv_cache_gib for card in a.card_gib]:
        cmd = command if kv is None else re.sub(r"--kv-cache-gib [0-9.]+", f"--kv-cache-gib {kv:g}", command)
        opts = options_from_command(cmd)
        if opts is None:
            p.error(f"run {a.command_of} of {a.times} has no pipeline command this checkout parses")
        overrides = {"dry_run": True}
        if a.rows_root:
            overrides["root"] = a.rows_root
        if a.data_dir:
            overrides["data_dir"] = a.data_dir
        opts = dataclasses.replace(opts, **overrides)
        steps = pipeline.plan(opts)
        os.environ[HARDWARE_ENV] = f"1x{card / USABLE:.1f}"  # the plans below are made for this card
        hw = parse_hardware(os.environ[HARDWARE_ENV])
        pipeline.place(steps, dataclasses.replace(opts, jobs=max(a.jobs)))
        shares = {}
        for st in steps:
            if st.trains and a.rows_root:  # the scheduler's own reading of a training step's share from its rows
                st.refine = functools.partial(train.planned_gib, st.flags, hw)
                schedule.refine(st.name, st)  # no rows for it: the plan for rows of max length stays
            shares[st.name] = st.gpu_gib
        by_kind: dict[str, list[float]] = {}
        for st in steps:
            if st.name in seconds:
                by_kind.setdefault(kind(st), []).append(seconds[st.name])
        est = {st.name: seconds.get(st.name, statistics.median(by_kind.get(kind(st), [1.0]))) for st in steps}
        for jobs in a.jobs:
            with tempfile.TemporaryDirectory() as work:
                r = simulate(steps, est, jobs, card, a.speedup, Path(work))
            given = re.search(r"--kv-cache-gib ([0-9.]+)", command)
            r["kv_cache_gib"] = kv if kv is not None else (float(given.group(1)) if given else None)
            r["shares_gib"] = shares
            r["estimated_steps"] = sorted(n for n in est if n not in seconds)
            results.append(r)
            print(f"card {card} GiB, --kv-cache-gib {r['kv_cache_gib']}, --jobs {jobs}: {r['makespan_s']:.0f} s ({len(steps)} steps, "
                  f"{len(r['estimated_steps'])} timed by their kind's median)", flush=True)
    a.out.write_text(json.dumps({"command": "python bench/schedule_sim.py " + " ".join(argv or sys.argv[1:]),
                                 "simulated": command, "times_from": str(a.times), "runs": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
