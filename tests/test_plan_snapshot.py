"""The dry-run plan of every documented setting, snapshotted: step names, output paths and the steps each waits for,
and the commands themselves. A restructuring of the code must leave them unchanged (issue 28: "the dry-run plan of
every documented setting unchanged in steps and outputs").

A deliberate change of the plan regenerates the snapshot: ``ALICE_UPDATE_SNAPSHOT=1 python -m pytest -q
tests/test_plan_snapshot.py`` (then review the diff of ``tests/snapshots/dry_run_plans.json``)."""

import json
import os
import sys
from pathlib import Path

import pytest

from alice import pipeline

SNAPSHOT = Path(__file__).parent / "snapshots" / "dry_run_plans.json"
# The documented settings (README: the demo, --original, a mid-level size, the paper's commands, the GPU runs)
SETTINGS = {
    "demo": [],
    "demo --original": ["--original"],
    "demo --with-naive": ["--with-naive"],
    "demo cascade": ["--midlevel", "1.5B", "--student", "3B"],
    "demo hotpotqa": ["--data", "hotpotqa"],
    "paper hotpotqa": ["--paper", "--model", "qwen2.5", "--data", "hotpotqa", "--teacher", "1.5B", "--student", "7B"],
    "paper hotpotqa cascade": ["--paper", "--model", "qwen2.5", "--data", "hotpotqa", "--teacher", "1.5B",
                               "--midlevel", "3B", "--student", "7B"],
    "paper gsm8k coder": ["--paper", "--model", "qwen2.5-coder", "--data", "gsm8k", "--teacher", "0.5B",
                          "--student", "1.5B"],
    "paper arc coder": ["--paper", "--model", "qwen2.5-coder", "--data", "arc_challenge", "--teacher", "0.5B",
                        "--student", "1.5B"],
    "paper triviaqa llama cascade": ["--paper", "--model", "llama3", "--data", "triviaqa", "--teacher", "1B",
                                     "--midlevel", "3B", "--student", "8B", "--with-naive"],
}


def _plan(flags: list[str]) -> list[dict]:
    steps = pipeline.plan(pipeline.options_from_argv([*flags, "--dry-run"]))
    out = []
    for st in steps:
        argv = ["python" if a == sys.executable else a for a in st.argv]
        if "--backend" in argv:  # auto resolves by what this machine has installed
            argv[argv.index("--backend") + 1] = "<backend>"
        out.append({"name": st.name, "outputs": [str(p) for p in st.outputs], "after": list(st.after), "argv": argv})
    return out


@pytest.fixture(scope="module")
def plans():
    root = os.environ.pop("ALICE_ROOT", None)  # paths relative to the default root
    try:
        got = {name: _plan(flags) for name, flags in SETTINGS.items()}
    finally:
        if root is not None:
            os.environ["ALICE_ROOT"] = root
    if os.environ.get("ALICE_UPDATE_SNAPSHOT"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(got, indent=1) + "\n")
    return got, json.loads(SNAPSHOT.read_text())


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_steps_and_outputs_unchanged(plans, setting):
    got, want = plans
    assert [(s["name"], s["outputs"], s["after"]) for s in got[setting]] == \
           [(s["name"], s["outputs"], s["after"]) for s in want[setting]]


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_commands_unchanged(plans, setting):
    got, want = plans
    assert [s["argv"] for s in got[setting]] == [s["argv"] for s in want[setting]]
