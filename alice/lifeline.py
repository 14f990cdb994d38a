"""Processes a run starts die with it, whatever ends it (kill -9 included).

vLLM starts its engine in processes of its own (EngineCore, and its Worker): when the process that made the engine
is killed with SIGKILL they are left running, generating and holding the GPU. A parent-death signal
(``PR_SET_PDEATHSIG``) has to be set inside each child, which vLLM's code does not do; so ``guard()`` starts a
watchdog instead: a small process in a session of its own (a kill of the run's process group leaves it alive) that
notes the guarded process's descendants twice a second and, as soon as that process is gone, kills each of them
that is still the same process (pid and start time). It costs nothing while the run lives; on a clean exit the
descendants are gone already and it simply exits.

``guard()`` is called before a vLLM engine starts (``generation.Generator``) and before data-parallel workers start
(``data_parallel.run_shards``); once per process.
"""

from __future__ import annotations

import os
import subprocess
import sys

_GUARDED: dict[int, subprocess.Popen] = {}  # pid of the guarded process -> its watchdog

WATCHDOG = r"""
import os, select, signal, sys, time

parent = int(sys.argv[1])
me = os.getpid()


def stat(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return int(rest[1]), rest[19]  # ppid, start time


def descendants(roots):
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            s = stat(int(name))
            if s:
                children.setdefault(s[0], []).append((int(name), s[1]))
    out, todo = {}, list(roots)
    while todo:
        for pid, start in children.get(todo.pop(), ()):
            if pid != me and pid not in out:
                out[pid] = start
                todo.append(pid)
    return out


start = stat(parent)
if start is None:
    sys.exit(0)
try:
    fd = os.pidfd_open(parent)
except (AttributeError, OSError):
    fd = None
known = {}
while True:
    if fd is not None:
        gone = bool(select.select([fd], [], [], 0.5)[0])
    else:
        time.sleep(0.5)
        gone = False
    s = stat(parent)
    if gone or s is None or s[1] != start[1]:
        break
    known.update(descendants([parent]))
    known = {p: st for p, st in known.items() if (stat(p) or (0, None))[1] == st}
# the parent is gone: its descendants were reparented; kill those still alive (and what they started since)
known.update(descendants(list(known)))
for pid, st in known.items():
    if (stat(pid) or (0, None))[1] == st:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


def guard() -> None:
    """Start this process's watchdog (once): its descendants are killed when it dies, however it dies (Linux)."""
    pid = os.getpid()
    if pid in _GUARDED and _GUARDED[pid].poll() is None:
        return
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc"):
        return
    _GUARDED[pid] = subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, str(pid)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
