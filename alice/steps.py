"""Running the pipeline's steps: each in this process (its stage's ``run(config)``) or as a subprocess
(``python -m alice.stages.<name> <flags>``), one after another, each with its log (up to ``--jobs`` at once:
``alice.schedule``).

A ``Step`` is one stage call of a setting: its command in the paper's script spelling (``argv``: what the dry run
prints and what the outputs' records list, ``alice.fresh``), the files it makes and the steps it waits for.
In-process, the step's flags are parsed by the stage's own parser into its typed config (``alice.stages``) and its
``run(config)`` is called: no ``sys.argv``, no script files (a non-editable install runs the same). Consecutive
in-process steps that generate with the same model share one loaded engine (``generation.engine_pool``), and a
same-shape model's weights go into a living vLLM engine; before a training step the pooled engines sleep (vLLM on a
GPU) or are freed (``generation.rest_for_training``). A failed step (an exception, or a non-zero exit) stops the run and
names its log. SIGTERM unwinds the run (``terminable``): the pooled engines are shut down.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import artifacts, fresh, generation, paths, stages
from .errors import AliceError
from .sft import is_finished

SFT = artifacts.SFT  # the training script: a step running it frees the pooled engines first

@dataclass
class Step:
    name: str
    argv: list[str]  # [python, <paper-named script>, *flags]: the documented command (dry run, records, logs)
    outputs: list[Path] = field(default_factory=list)  # all exist, made by this command from unchanged inputs -> done
    after: tuple[str, ...] = ()  # the steps (names) whose outputs this one reads: --jobs starts it once they succeeded
    gpu_gib: float | None = None  # GPU memory it may use on a card shared by --jobs (alice.schedule); None: the card
    model: str | None = None  # the model it trains or generates with (hub id / folder of its architecture): the plan's
    launcher: list[str] = field(default_factory=list)  # a training step on several GPUs: the command it runs under
    resources: str = ""  # the plan of this step, as --dry-run prints it
    refine: object = None  # () -> GiB: its gpu_gib from its inputs once they exist (a training step: from its rows)
    # the stage it calls: a name in alice.stages (default: the stage of its script), or any object with the stage
    # interface parse(flags) -> config and run(config); None: a plain command, run as a subprocess
    stage: object = None

    def __post_init__(self):
        if self.stage is None and self.script:
            self.stage = stages.of_script(self.script)

    @property
    def flags(self) -> list[str]:
        return [str(a) for a in self.argv[2:]]

    def done(self) -> bool:
        if not self.outputs or not all(_exists(p) for p in self.outputs):
            return False
        flags = fresh.command_line(self.flags)  # paths resolved: a root spelled otherwise matches
        for p in self.outputs:
            meta = fresh.read_meta(p)
            # believed: it checks against its record (rows, ids, weights) and its inputs are unchanged
            if meta is None or flags not in meta.get("argvs", []) or not fresh.believed(p):
                return False
        return True

    def stage_module(self):
        """The stage's module (``alice.stages.<name>``), or the object given as ``stage``; None for a plain command."""
        return stages.get(self.stage) if isinstance(self.stage, str) else self.stage

    def config(self, overwrite: bool = False):
        """The step's typed config: its flags parsed by the stage's own parser (a bad flag: ``SystemExit(2)``)."""
        return self.stage_module().parse(self.flags + (["--overwrite"] if overwrite else []))

    def shown(self) -> list[str]:
        """The command as documented (the paper's script), under its launcher when it has one: what --dry-run prints."""
        return [*self.launcher, *self.argv[1:]] if self.launcher else list(self.argv)

    def command(self, overwrite: bool = False) -> list[str]:
        """What runs as a subprocess: a stage as ``python -m alice.stages.<name> <flags>`` (needs no checkout), with
        ``--overwrite``, under its launcher when it has one; a plain command as it is."""
        extra = ["--overwrite"] if overwrite else []
        if not isinstance(self.stage, str):
            return [*self.launcher, *self.argv[1:], *extra] if self.launcher else [*self.argv, *extra]
        module = ["-m", stages.module_name(self.stage), *self.flags, *extra]
        return [*self.launcher, *module] if self.launcher else [self.argv[0], *module]

    @property
    def script(self) -> str | None:
        """The stage script a ``python <script> ...`` step runs (None for any other command)."""
        return self.argv[1] if len(self.argv) > 1 and self.argv[1].endswith(".py") else None

    @property
    def trains(self) -> bool:
        return self.script == SFT


class BadStep(AliceError):
    """A step's command line that its stage does not take (a flag, a value), found before anything runs."""


def check_steps(steps: list[Step]) -> None:
    """Parse every stage step's flags with its stage's own ``parse`` (its parser, then the stage's checks of them)
    before anything runs: a flag no stage takes (in --extra-gen-args / --extra-sft-args) or a bad value is a
    ``BadStep`` in one line naming the step, not a failure hours in. A plain command is not checked."""
    for st in steps:
        if st.stage_module() is None:
            continue
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
                st.config()
        except SystemExit as e:  # the parser's usage error (its last line: '<prog>: error: <why>')
            lines = [ln for ln in said.getvalue().splitlines() if ln.strip()]
            why = lines[-1].split(": error: ", 1)[-1] if lines else f"its parser exited with {e.code}"
            raise BadStep(f"step '{st.name}' ({st.script or st.stage}): {why}") from None
        except AliceError as e:
            raise BadStep(f"step '{st.name}' ({st.script or st.stage}): {e}") from None


def _exists(p: Path) -> bool:
    """A file, or a trained-model folder (config + safetensors weights)."""
    if p.suffix in (".jsonl", ".json", ".png", ".md"):
        return p.is_file()
    return is_finished(p)


def _stream_handlers(streams) -> list:
    """The logging StreamHandlers (not file handlers) of any logger that write to one of ``streams``."""
    import logging

    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    return [h for lg in loggers for h in lg.handlers if type(h) is logging.StreamHandler and
            any(h.stream is s for s in streams)]


def _repoint(handler, stream) -> None:
    """Point a StreamHandler at ``stream`` without flushing its old one (it may be a closed step log); a ``flush``
    bound to the stream it was made with (transformers' handler does that) goes back to flushing its own stream."""
    handler.acquire()
    try:
        handler.stream = stream
        handler.__dict__.pop("flush", None)
    finally:
        handler.release()


@contextmanager
def _output_to(f):
    """Everything the step prints goes to ``f``: Python's sys.stdout/stderr, the logging handlers that write to them
    (or that the step makes, e.g. vLLM's at its import), and, at the file-descriptor level, what libraries and their
    child processes write to fds 1 and 2. Afterwards no handler is left on ``f``, which the caller closes: a library
    that logs in a later step (vLLM, freeing a pooled engine) writes to the console, not to a closed file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    old = sys.stdout, sys.stderr
    moved = {h: h.stream for h in _stream_handlers(old)}
    for h in moved:
        _repoint(h, f)
    os.dup2(f.fileno(), 1)
    os.dup2(f.fileno(), 2)
    sys.stdout = sys.stderr = f
    try:
        yield
    finally:
        f.flush()
        sys.stdout, sys.stderr = old
        for h in _stream_handlers([f]):
            _repoint(h, moved.get(h, old[1]))  # a handler made during the step: stderr, logging's default
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def training_need(st: Step, cfg) -> int | None:
    """A CPU's memory the training step ``st`` takes (``pool.training_need``): its model, LoRA or not, its precision."""
    from .generation import pool
    from .sft_config import precision

    if st.model is None:
        return None
    return pool.training_need(st.model, lora=cfg.lora, bf16=precision(cfg) != "fp32")


def _call_in_process(st: Step, f, overwrite: bool) -> int:
    """Run the step's stage here: its flags parsed into its config, then ``run(config)``. Its exit status is
    returned, never raised (a usage error: 2, an error a user can cause: one line and 2, any other exception: its
    traceback and 1), so a failing stage cannot end the pipeline without its report."""
    env = dict(os.environ)
    with _output_to(f):
        try:
            cfg = st.config(overwrite)
            if st.trains:  # pooled engines sleep (GPU), stay where memory allows (CPU) or are freed
                generation.rest_for_training(lambda: training_need(st, cfg))
            st.stage_module().run(cfg)
            rc = 0
        except SystemExit as e:  # a usage error of the stage's parser (or a stage that exits)
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
        except AliceError as e:
            print(f"error: {e}", file=sys.stderr)
            rc = 2
        except Exception:
            traceback.print_exc()
            rc = 1
        finally:
            os.environ.clear()  # what a step set (e.g. ACCELERATE_* during training) does not leak into the next
            os.environ.update(env)
    gc.collect()
    return rc


def execute(steps: list[Step], logs: Path, in_process: bool = True, report_note: str | None = None) -> int:
    """Run the steps not done yet, in order, each with its log in ``logs``; 0 when all succeed, else 1 (the run
    stops at the first failure and names its log). In-process steps share loaded engines (``engine_pool``); a step
    under a launcher, or with another ``--python``, runs as a subprocess."""
    logs.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    timings = []
    with generation.engine_pool(generation.pool.default_size()):
        for i, st in enumerate(steps, 1):
            check_terminated()
            label = f"[{i:2d}/{len(steps)}] {st.name}"
            if st.done():
                print(f"{label}: done, skipped", flush=True)
                continue
            here = in_process and st.stage is not None and st.argv[0] == sys.executable and not st.launcher
            argv, log, f = open_log(logs, i, st, in_process=here)
            print(f"{label}: running (log: {log})", flush=True)
            t0 = time.time()
            with f:
                if st.trains and not here:  # training under a launcher (several GPUs) needs the cards too
                    generation.rest_for_training()
                rc = _call_in_process(st, f, overwrite=bool(st.outputs)) if here else _call(argv, f)
            check_terminated()
            dt = time.time() - t0
            timings.append((st.name, dt))
            if not outcome(label, st, rc, dt, log, report_note):
                return 1
    print(f"all steps finished in {time.time() - t_all:.0f}s ({len(timings)} run, {len(steps) - len(timings)} skipped)")
    return 0


def open_log(logs: Path, i: int, st: Step, in_process: bool = False):
    """The step's command (with ``--overwrite``: a step not done redoes what was made otherwise, alice.fresh), its log
    ``logs/<i>_<name>.log`` and that log opened, the command written first (in-process: the documented command the
    stage's config is parsed from; an earlier attempt's log becomes ``<i>_<name>.attempt<k>.log``)."""
    overwrite = bool(st.outputs)
    argv = st.command(overwrite=overwrite)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", st.name.replace(">", "")).strip("._") or "step"
    if len(name) > 80:  # a step named by long model paths: the log's name still fits (255 bytes)
        name = f"{name[:70]}-{hashlib.sha256(st.name.encode()).hexdigest()[:8]}"
    log = logs / f"{i:02d}_{name}.log"
    if log.exists():  # an earlier attempt of a step not done (it failed or was killed): its log is kept, not overwritten
        k = 1
        while log.with_suffix(f".attempt{k}.log").exists():
            k += 1
        log.rename(log.with_suffix(f".attempt{k}.log"))
    f = open(log, "w", buffering=1)
    shown = [*st.shown(), *(["--overwrite"] if overwrite else [])] if in_process else argv
    f.write(f"$ {shlex.join(shown)}\n")
    f.flush()
    return argv, log, f


def outcome(label: str, st: Step, rc: int, dt: float, log: Path, report_note: str | None) -> bool:
    """Print how a finished step went (a failure: its exit status and its log's tail; the report: its table); True
    when it succeeded (exit 0 and, for a step with outputs, all of them made and recorded)."""
    if rc != 0 or (st.outputs and not st.done()):
        print(f"{label}: FAILED (exit {rc}) after {dt:.0f}s; see {log}", file=sys.stderr, flush=True)
        for line in log.read_text().strip().splitlines()[-5:]:
            print(f"    {line}", file=sys.stderr)
        return False
    print(f"{label}: ok in {dt:.0f}s", flush=True)
    if st.name == "report":
        print((report_note + "\n" if report_note else "") + log.read_text().split("\n", 1)[1])
    return True


OUTCOME_LINE = re.compile(r"^\[\s*(\d+)/\d+\] (.+?): (running|ok in (\d+)s|FAILED \(exit -?\d+\) after (\d+)s)", re.M)


def read_outcomes(console: str) -> dict[str, dict]:
    """Each step as the pipeline's console output tells it (``execute``'s and ``outcome``'s lines): ``{name: {"index":
    i, "status": "ok" | "FAILED" | "not finished" (started, never ended), "s": seconds or None}}``."""
    out = {}
    for m in OUTCOME_LINE.finditer(console):
        i, name, what = int(m.group(1)), m.group(2), m.group(3)
        if what == "running":
            out.setdefault(name, {"index": i, "status": "not finished", "s": None})
        else:
            out[name] = {"index": i, "status": "ok" if what.startswith("ok") else "FAILED",
                         "s": int(m.group(4) or m.group(5))}
    return out


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the pipeline dies (even by kill -9), so no step runs on unattended (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn(argv: list[str], log, env_extra: dict | None = None, **popen) -> subprocess.Popen:
    """Start one step (or the engine lane: ``popen``, more of Popen's arguments), its output to ``log``; it dies with
    the pipeline (even by kill -9). The step imports the ``alice`` package this process runs (from where it is
    installed or checked out), whatever else is on the path."""
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=paths.child_env(**(env_extra or {})),
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None, **popen)


def _call(argv: list[str], log) -> int:
    """Run one step; Ctrl-C or a kill of the pipeline ends the step too."""
    proc = spawn(argv, log)
    try:
        return proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that the run unwinds: the step's output goes back to the console, the
    pooled engines are shut down (vLLM's engine processes would otherwise outlive the pipeline, generating and holding
    the GPU) and data-parallel workers are stopped. Not an ``Exception``: a step cannot catch it as its own failure."""


_TERMINATED: list[int] = []  # SIGTERMs received: the handler's exception may land in a finalizer, which swallows it


def _raise_terminated(signum, frame):
    _TERMINATED.append(signum)
    raise Terminated(signum)


def check_terminated() -> None:
    """Raise ``Terminated`` when a SIGTERM came (its exception may have been swallowed where it landed: inside a
    finalizer or a library's ``except BaseException``); checked between steps, so no further step starts."""
    if _TERMINATED:
        raise Terminated(_TERMINATED[0])


def terminable(fn, *args) -> int:
    """``fn(*args)`` with SIGTERM raising ``Terminated`` (main thread only), which unwinds the run; then 128 + 15."""
    import threading

    previous = signal.signal(signal.SIGTERM, _raise_terminated) if threading.current_thread() is threading.main_thread() else None
    _TERMINATED.clear()
    try:
        return fn(*args)
    except Terminated:
        print("[pipeline] terminated (SIGTERM): the loaded engines were shut down; rerun the same command to continue "
              "where it stopped", file=sys.stderr, flush=True)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
