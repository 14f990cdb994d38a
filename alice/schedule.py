"""Running the pipeline's steps up to ``--jobs`` at once, each in its own process with its log.

A step starts once every step it reads from succeeded, the longest remaining chain first, and only when the card has
room for it (training steps too: two fit beside each other when their plans do; without a counted card, one training
step at a time): with ``card_gib`` (what steps may use of one GPU, e.g. 0.92 of an
80 GiB card) every running step holds its ``Step.gpu_gib`` (the memory plan's: a training step's estimate, an engine's
weights + KV cache + overhead; None: the whole card), and a step whose share does not fit beside the running ones
waits. A training step is held to its share: ``ALICE_GPU_BUDGET_GIB`` in its environment makes its memory plan fit
that share and caps its process's allocator there (``alice.sft_memory.cap_process_memory``), with PyTorch's expandable
segments against fragmentation, so it cannot grow into a neighbour's engine (measured on an H100: a 1.5B training
step planned at 55 GiB held 73.7 GiB of the card, 44 GiB of it allocated, and the engine beside it died of OOM).
A step that still runs out of GPU memory while another step shared the card runs once more alone: the retry changes
what caused the failure, the neighbours."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

from .hardware import BUDGET_ENV
from .lane import Lane
from .steps import Step, check_terminated, open_log, outcome, spawn, training_need

POLL_S = 0.2  # how often running steps are checked (bench/schedule_sim.py, which replays steps sped up, lowers it)
GPU_OOM = re.compile(r"OutOfMemoryError|CUDA out of memory|CUDA error: out of memory")


def chains(steps: list[Step], weight=lambda st: 1) -> tuple[list[float], list[int | None]]:
    """For each step, the weight of the heaviest chain of steps from it to the end, through the steps that wait for
    it (itself included; ``weight``: of one step, 1 counts steps), and the next step on that chain (None: the last).
    --jobs starts the ready step with the longest chain first (the Alice chain before a lone evaluation);
    bench/setting.py weighs steps by their measured work to find a run's critical path."""
    index = {st.name: i for i, st in enumerate(steps)}
    length = [weight(st) for st in steps]
    after: list[int | None] = [None] * len(steps)
    for i in range(len(steps) - 1, -1, -1):  # a step's prerequisites come before it in the plan
        for dep in steps[i].after:
            d = index[dep]
            if weight(steps[d]) + length[i] > length[d]:
                length[d], after[d] = weight(steps[d]) + length[i], i
    return length, after


def share(st: Step, card_gib: float | None) -> float:
    """What ``st`` holds of the card while it runs (GiB): its ``gpu_gib``; the whole card when a step on a model has
    none (its plan failed, or it spans several cards); nothing for a step on no model (the report, a data step)."""
    if card_gib is None:
        return 0.0
    if st.gpu_gib is not None:
        return min(st.gpu_gib, card_gib)
    return card_gib if (st.model or st.trains) else 0.0


def step_env(st: Step, card_gib: float | None) -> dict:
    """The environment a step's process gets beside the pipeline's, on a GPU (``card_gib`` given; a setting the user
    made is kept): a training step its budget and expandable segments (PYTORCH_CUDA_ALLOC_CONF); a generating step
    vLLM's engine core in its own process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): the step makes one engine and
    ends, so nothing of the engine outlives it, and one process start fewer is the cheapest engine start-up measured
    (eager, 1.5B on an H200: 23-27 s of start-up, docs/lab-notes.md, session 8)."""
    if card_gib is None or (not st.trains and not st.model):
        return {}
    if not st.trains:
        return engine_env(card_gib)
    env = {BUDGET_ENV: f"{share(st, card_gib):.1f}"}
    if "PYTORCH_CUDA_ALLOC_CONF" not in os.environ:
        env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    return env


def execute_parallel(steps: list[Step], logs: Path, jobs: int, report_note: str | None = None,
                     card_gib: float | None = None, shared_engines: bool = False) -> int:
    """Run the steps not done yet, up to ``jobs`` at once (see the module's doc; ``card_gib``: the GPU memory steps
    may share, None: not counted). A failed step stops only the steps that need it; the others run on, then the
    report (``after`` = every step) reports what exists. 0 when all succeed. ``shared_engines``: the generating
    steps run one after another in one engine lane (``alice.lane``), sharing loaded engines; what its kept engine
    holds counts as a running step's share, and a step that does not fit beside it has the lane free it first."""
    logs.mkdir(parents=True, exist_ok=True)
    names = {st.name for st in steps}
    for st in steps:
        unknown = [d for d in st.after if d not in names]
        if unknown:
            raise ValueError(f"step {st.name!r} waits for unknown steps {unknown}")
    t_all = time.time()
    prio = chains(steps)[0]
    state = {st.name: "todo" for st in steps}  # todo -> running -> ok | failed; todo -> blocked
    running: dict[int, tuple] = {}  # i -> (process, start, log path, log file)
    shared: set[int] = set()  # running steps that have had a neighbour on the card
    alone: set[int] = set()  # steps to run with nothing beside them (a retry after a GPU OOM beside others)
    refined: set[int] = set()  # steps whose share was read from their inputs (Step.refine)
    rested: set[int] = set()  # training steps for which the lane has put its engines to rest (no GPU)
    ran = skipped = 0
    label = lambda i: f"[{i + 1:2d}/{len(steps)}] {steps[i].name}"  # noqa: E731
    lane = Lane(logs / "engine_lane.log", engine_env(card_gib)) if shared_engines else None
    try:
        while True:
            check_terminated()
            if lane is not None and lane.resting:
                lane.job.poll()
            for i, st in enumerate(steps):  # a failed prerequisite blocks its dependants (the report runs anyway)
                if state[st.name] == "todo" and st.name != "report" and any(
                        state[d] in ("failed", "blocked") for d in st.after):
                    state[st.name] = "blocked"
                    print(f"{label(i)}: not run (a step it needs failed)", file=sys.stderr, flush=True)
            ready = sorted((i for i, st in enumerate(steps) if state[st.name] == "todo" and all(
                state[d] in (("ok", "failed", "blocked") if st.name == "report" else ("ok",)) for d in st.after)),
                key=lambda i: (-prio[i], i))
            started = False
            draining = any(i in alone for i in ready)  # a step waiting to run alone: nothing else starts meanwhile
            reserve = None  # the share of the first step waiting for room on the card (see below)
            for i in ready:
                st = steps[i]
                if st.outputs and st.done():  # checked now: its prerequisites may just have been redone
                    state[st.name] = "ok"
                    skipped += 1
                    print(f"{label(i)}: done, skipped", flush=True)
                    started = True  # its dependants may be ready now
                    continue
                if card_gib is not None and st.refine and i not in refined:
                    refined.add(i)
                    refine(label(i), st)
                if draining and (i not in alone or running):
                    continue
                in_lane = lane is not None and lane_step(st)
                if in_lane and lane.busy:
                    continue  # the lane runs one step at a time
                if running and (len(running) >= jobs or any(j in alone for j in running)
                                or (st.trains and card_gib is None and any(steps[j].trains for j in running))):
                    continue  # memory not counted (no GPU): one training step at a time, it fills the machine
                # what the idle lane's kept engine holds (until a rest of it has finished; a step of the lane's
                # own counts its engine in its share)
                kept = [lane.held_gib] if lane is not None and lane.held_gib and not in_lane and (
                    not lane.busy or lane.resting) else []
                if card_gib is not None and (running or kept) and not fits(
                        share(st, card_gib), [share(steps[j], card_gib) for j in running] + kept, reserve, card_gib):
                    if kept and not lane.busy and fits(share(st, card_gib), [share(steps[j], card_gib)
                                                                             for j in running], reserve, card_gib):
                        lane.rest()  # the lane's kept engine is in the way: freed (or put to sleep) first
                    reserve = share(st, card_gib) if reserve is None else reserve
                    continue
                if st.trains and card_gib is None and lane is not None and lane.pooled and not lane.busy \
                        and i not in rested:  # no GPU: the lane's engines stay only where the memory covers both
                    rested.add(i)
                    lane.rest(need=cpu_training_need(st))
                    continue
                if in_lane:
                    argv, log, f = open_log(logs, i + 1, st, in_process=True)
                    f.close()  # the lane appends the step's output
                    running[i] = (lane.run(st.name, st.argv, log, bool(st.outputs), share(st, card_gib)),
                                  time.time(), log, f)
                else:
                    argv, log, f = open_log(logs, i + 1, st)
                    running[i] = (spawn(argv, f, step_env(st, card_gib)), time.time(), log, f)
                if len(running) > 1:
                    shared.update(running)
                state[st.name] = "running"
                print(f"{label(i)}: running (log: {log})" + (" alone" if i in alone else ""), flush=True)
                started = True
            if not running and not started and not (lane is not None and lane.busy):
                break
            for i, (proc, t0, log, f) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                f.close()
                del running[i]
                ran += 1
                st = steps[i]
                if rc != 0 and i in shared and i not in alone and GPU_OOM.search(_tail(log)):
                    alone.add(i)  # the retry changes something: nothing else on the card
                    state[st.name] = "todo"
                    print(f"{label(i)}: ran out of GPU memory beside other steps after {time.time() - t0:.0f}s "
                          f"(see {log}); it runs again alone", file=sys.stderr, flush=True)
                    shared.discard(i)
                    continue
                shared.discard(i)
                state[st.name] = "ok" if outcome(label(i), st, rc, time.time() - t0, log, report_note) else "failed"
            if running:
                time.sleep(POLL_S)
    finally:
        for proc, *_ in running.values():  # Ctrl-C or a kill of the pipeline ends its steps too
            proc.kill()
            proc.wait()
        if lane is not None:
            lane.close()
    bad = [n for n, v in state.items() if v != "ok"]
    print(f"all steps finished in {time.time() - t_all:.0f}s ({ran} run, {skipped} skipped"
          + (f"; failed or not run: {', '.join(bad)})" if bad else ")"), file=sys.stderr if bad else sys.stdout)
    return 1 if bad else 0


def cpu_training_need(st: Step) -> int | None:
    """The CPU memory a training step takes (``pool.training_need``), None when its flags do not say."""
    try:
        return training_need(st, st.config())
    except (Exception, SystemExit):  # noqa: BLE001 - a plain command or flags of no stage: unknown
        return None


def lane_step(st: Step) -> bool:
    """A step the engine lane runs: one that generates (it has a model and does not train) with a stage of this
    package, in this interpreter, under no launcher."""
    return bool(st.model) and not st.trains and isinstance(st.stage, str) and st.argv[0] == sys.executable \
        and not st.launcher


def engine_env(card_gib: float | None) -> dict:
    """What a process that makes engines gets on a GPU (a generating step's, the engine lane's): vLLM's engine core
    in that process."""
    if card_gib is None or "VLLM_ENABLE_V1_MULTIPROCESSING" in os.environ:
        return {}
    return {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def fits(gib: float, running: list[float], reserve: float | None, card_gib: float) -> bool:
    """Whether a step holding ``gib`` may start beside running steps holding ``running`` (GiB each). With a
    step of higher priority waiting for room (``reserve``: its share), a lower one starts only when it leaves that
    room once the largest running step ends: a stream of small steps cannot keep a large one (a training step) off
    the card, and an engine still runs beside a training step while another training step waits for it (measured
    on an H100: with every lower step held back instead, no evaluation ran beside 9 minutes of training)."""
    held = sum(running)
    if held + gib > card_gib:
        return False
    return reserve is None or gib + reserve <= card_gib - (held - max(running, default=0.0))


def refine(label: str, st: Step) -> None:
    """``st.gpu_gib`` from its inputs, now that they exist (a training step's plan from its rows instead of the
    plan for rows of max length), with 0.1 GiB over the plan's rounded estimate so that the step, given it as its
    budget, makes the same plan it makes alone on the card: its micro-batch does not depend on its neighbours.
    A failure keeps the worst case."""
    try:
        gib = st.refine()
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the worst case holds; the step reports a real problem
        print(f"{label}: its share of the card stays {st.gpu_gib} GiB (reading its rows: {e})", file=sys.stderr)
        return
    if gib is not None and st.gpu_gib is not None:  # more or less than the worst case: rows of max length plan a
        # smaller micro-batch, shorter rows may fit the asked one (measured: 45.2 GiB at 16 x 1 against 43.6 at 4 x 4)
        print(f"{label}: holds {gib + 0.1:.1f} GiB of the card (its plan from its rows; "
              f"{st.gpu_gib:.1f} for rows of max length)", flush=True)
        st.gpu_gib = round(gib + 0.1, 1)


def _tail(log: Path, size: int = 20000) -> str:
    """The end of a step's log (where its error is)."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
