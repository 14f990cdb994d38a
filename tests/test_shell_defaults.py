"""The shell front doors of Alice (W2SG_pipeline/ours/*.sh) hold no copies of the stages' defaults: a setting they do
not set is left to the stage script's own default (alice/options.py), and one they set is passed on."""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _commands(**env) -> list[str]:
    """The stage commands ours-wts-single.sh runs, printed instead of run (PYTHON=echo)."""
    r = subprocess.run(["bash", "W2SG_pipeline/ours/ours-wts-single.sh", "--data", "gsm8k", "--teacher", "1.5B"],
                       cwd=REPO, env=dict(os.environ, PYTHON="echo", **env), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_unset_defaults_are_the_stage_scripts_own():
    cluster = _commands()[0]
    assert "new_weak_to_strong_cluster.py" in cluster
    assert "--num-samples" not in cluster and "--similarity-threshold" not in cluster


def test_set_values_are_passed_on():
    cluster = _commands(NUM_SAMPLES="20", THRESHOLD="0.8")[0]
    assert "--num-samples 20" in cluster and "--similarity-threshold 0.8" in cluster
