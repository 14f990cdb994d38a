"""The engine lane of ``--jobs`` (``--shared-engines``): one long-lived process that runs the generating steps one
after another in-process, so that they share loaded engines as the in-process path does (``generation.engine_pool``:
the same model's engine reused, a same-shape model's weights loaded into a living vLLM engine), while the training
steps run beside it as their own processes (``alice.schedule``).

Without it every generating step of ``--jobs`` is a new process that imports vLLM and makes its engine: measured on
an H100, 654 s of engine loading in the gsm8k setting's 1,099 s wall (``results/setting_gpu.json``).

The pipeline talks to the lane over its stdin (one JSON request a line) and a pipe of its own for the replies (the
lane's fds 1 and 2 are the steps' logs while they run, and its console log between them):

- ``{"step": name, "argv": [...], "log": path, "overwrite": bool}``: run the step (``steps._call_in_process``, its
  output appended to its log); reply ``{"rc": n, "pooled": engines kept}``;
- ``{"rest": true, "need": bytes or null}``: free the pooled engines, or put them to sleep (vLLM's sleep mode on a
  GPU, ``ALICE_VLLM_SLEEP``), so that a training step gets their memory (on a CPU they stay while the free memory
  covers ``need`` too); reply ``{"rc": 0, "pooled": engines kept}``.

A lane that dies (a crash of a library) fails its step with the lane's exit status; the next step starts a new lane.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def lane_argv(reply_fd: int) -> list[str]:
    """The lane's command: this interpreter serving requests, its replies to ``reply_fd``."""
    return [sys.executable, "-m", "alice.lane", str(reply_fd)]


class Job:
    """A request to the lane, as ``schedule.execute_parallel`` sees a step's process: ``poll()`` (None while it runs,
    then its exit status) and ``kill()``."""

    def __init__(self, lane: "Lane"):
        self.lane = lane
        self.rc: int | None = None

    def poll(self) -> int | None:
        if self.rc is None:
            self.lane._read()
        return self.rc

    def kill(self) -> None:
        self.lane.close(kill=True)

    def wait(self) -> int:
        return self.rc if self.rc is not None else -9


class Lane:
    """The lane process (started by the first request, again after it died) and what it holds."""

    def __init__(self, console: Path, env_extra: dict | None = None):
        self.console = console  # the lane's own output between steps (engines freed, vLLM's shutdown lines)
        self.env_extra = dict(env_extra or {})
        self.proc: subprocess.Popen | None = None
        self.job: Job | None = None  # the request running, None when idle
        self.pooled = 0  # engines the lane keeps between steps
        self.held_gib = 0.0  # what those engines hold of the card (the share of the step that made them)
        self._fd = -1
        self._buf = b""
        self._gib: float | None = 0.0  # the running request's share (None: a rest)

    @property
    def busy(self) -> bool:
        return self.job is not None

    @property
    def resting(self) -> bool:
        """A ``rest`` request is under way (it belongs to no step: the scheduler polls it itself)."""
        return self.job is not None and self._gib is None

    def _start(self) -> None:
        from .steps import spawn

        read_fd, write_fd = os.pipe()
        self.console.parent.mkdir(parents=True, exist_ok=True)
        with open(self.console, "ab") as log:
            self.proc = spawn(lane_argv(write_fd), log, self.env_extra, stdin=subprocess.PIPE, pass_fds=(write_fd,))
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self._fd, self._buf, self.pooled, self.held_gib = read_fd, b"", 0, 0.0

    def _send(self, request: dict, gib: float = 0.0) -> Job:
        if self.busy:
            raise RuntimeError("the engine lane is running a step already")
        if self.proc is None or self.proc.poll() is not None:
            self.close()
            self._start()
        self.job, self._gib = Job(self), (None if request.get("rest") else gib)
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        return self.job

    def run(self, name: str, argv: list[str], log: Path, overwrite: bool, gib: float = 0.0) -> Job:
        """Start a step in the lane; ``gib``: its share of the card, what its engine keeps holding afterwards."""
        return self._send({"step": name, "argv": [str(a) for a in argv], "log": str(log), "overwrite": overwrite}, gib)

    def rest(self, need: int | None = None) -> Job:
        """Free (or put to sleep) the engines the lane keeps: their memory goes to a training step. On a CPU, ``need``
        (the training's bytes, ``pool.training_need``) lets engines stay while the machine's free memory covers both,
        as in-process steps do (``generation.rest_for_training``)."""
        return self._send({"rest": True, "need": need})

    def _read(self) -> None:
        try:
            chunk = os.read(self._fd, 65536)
        except BlockingIOError:
            chunk = None
        if chunk:
            self._buf += chunk
        if b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            reply = json.loads(line)
            self._finish(int(reply["rc"]), int(reply.get("pooled", 0)))
        elif chunk == b"" or (self.proc is not None and self.proc.poll() is not None and not chunk):
            try:  # its replies' pipe closed: it has ended, or is ending
                rc = self.proc.wait(timeout=10) if self.proc is not None else None
            except subprocess.TimeoutExpired:
                rc = None
            print(f"[lane] the engine lane ended (exit status {rc}); the next generating step starts a new one "
                  f"(its output: {self.console})", file=sys.stderr, flush=True)
            self._finish(rc if rc else 1, 0)
            self.close()

    def _finish(self, rc: int, pooled: int) -> None:
        job, self.job = self.job, None
        self.pooled = pooled
        self.held_gib = self._gib if pooled and self._gib else 0.0  # asleep after a rest: nothing held
        if job is not None:
            job.rc = rc

    def close(self, kill: bool = False) -> None:
        """End the lane: at once (``kill``: a step of it is killed), else once it has freed its engines."""
        rc = -9
        if self.proc is not None:
            if kill:
                self.proc.kill()
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                rc = self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
            self.proc = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.job is not None:
            self._finish(rc if rc else -9, 0)


def serve(reply_fd: int) -> int:
    """The lane itself: run each request from stdin in this process, under one engine pool, and reply on ``reply_fd``."""
    from . import generation
    from .steps import Step, _call_in_process

    replies = os.fdopen(reply_fd, "w", buffering=1)
    with generation.engine_pool(generation.pool.default_size()):
        for line in sys.stdin:
            request = json.loads(line)
            if request.get("rest"):
                need = request.get("need")
                generation.rest_for_training((lambda: need) if need else None)
                rc = 0
            else:
                st = Step(name=request["step"], argv=request["argv"])
                with open(request["log"], "a") as f:
                    rc = _call_in_process(st, f, overwrite=bool(request["overwrite"]))
                if rc != 0:  # an engine a failed step leaves (e.g. after a CUDA error) serves no later step
                    generation.pool.free_pooled()
            replies.write(json.dumps({"rc": rc, "pooled": len(generation.pool.pooled_keys())}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1])))
