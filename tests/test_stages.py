"""Stages as functions with typed configs (alice.stages), settings as files (configs/*.yaml), and a pipeline that
calls the stages without swapping sys.argv or loading script files (issue 28, items 1 and 4)."""

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alice import pipeline, stages
from alice.paths import Layout
from alice.stages import common
from alice.testing import load_script

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

# the fewest flags each stage's script takes (each stage module is the same command as its script)
MINIMAL = {
    "cot": ["--teacher", "0.5B"],
    "train": ["--student", "0.5B", "--method", "base"],
    "label": ["--teacher", "0.5B", "--type", "qa"],
    "cluster": ["--teacher", "0.5B", "--student", "1.5B"],
    "uncertainty": ["--teacher", "0.5B", "--student", "1.5B"],
    "zeroshot": ["--teacher", "0.5B", "--student", "1.5B"],
    "final": ["--teacher", "0.5B", "--student", "1.5B"],
    "ablation": ["--teacher", "0.5B", "--student", "1.5B", "--ablation", "majority_vote"],
    "evaluate": ["--student", "0.5B", "--method", "naive"],
    "report": ["--teacher", "0.5B", "--student", "1.5B"],
}


def _fields(flags: list[str]) -> dict:
    """``--a-b v --c`` -> {"a_b": "v", "c": True}."""
    out, i = {}, 0
    while i < len(flags):
        key = flags[i][2:].replace("-", "_")
        if i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            out[key], i = flags[i + 1], i + 2
        else:
            out[key], i = True, i + 1
    return out


@pytest.mark.parametrize("name", stages.NAMES)
def test_every_stage_has_a_typed_config_whose_defaults_are_its_flags(name):
    """The config built from the fewest fields equals the one its script's flags parse into: a default lives in one
    place (the config's field and the flag agree); every flag is a field; the script is the stage's front door."""
    mod = stages.get(name)
    flags = ["--model", "qwen2.5-coder", "--data", "gsm8k", *MINIMAL[name]]
    parsed = mod.parse(flags)
    assert isinstance(parsed, mod.Config) and parsed.argv == tuple(flags)
    built = mod.Config(model="qwen2.5-coder", data="gsm8k", **_fields(MINIMAL[name]))
    assert dataclasses.replace(parsed, argv=None) == built
    assert common.dests(mod.build_parser()) <= {f.name for f in dataclasses.fields(mod.Config)}
    script = load_script(mod.SCRIPT)
    assert script.main is mod.main and script.run is mod.run and stages.of_script(mod.SCRIPT) == name
    assert callable(mod.inputs) and all(isinstance(p, Path) for p in mod.outputs(parsed))


def test_a_config_file_sets_a_stages_flags_and_flags_override_it(tmp_path, capsys):
    cfg = stages.get("cluster").parse(["--model", "qwen2.5", "--data", "hotpotqa", "--teacher", "1.5B",
                                       "--student", "7B", "--similarity-threshold", "0.8", "--num-samples", "16"])
    f = common.write_file(cfg, tmp_path / "cluster.json")
    again = stages.get("cluster").parse(["--config", str(f)])
    assert dataclasses.replace(again, argv=None) == dataclasses.replace(cfg, argv=None)
    over = stages.get("cluster").parse(["--config", str(f), "--num-samples", "4"])
    assert (over.num_samples, over.similarity_threshold) == (4, 0.8)
    f.write_text(json.dumps(dict(common.to_dict(cfg), similarity_treshold=0.7)))
    with pytest.raises(SystemExit) as e:
        stages.get("cluster").parse(["--config", str(f)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "unknown setting 'similarity_treshold'" in err and "similarity_threshold" in err


def _hotpotqa(tmp_path) -> str:
    d = tmp_path / "data"
    (d / "hotpotqa").mkdir(parents=True)
    with open(d / "hotpotqa" / "train.jsonl", "w") as f:
        for i in range(6):
            f.write(json.dumps({"id": f"hp{i}", "question": f"Which city is capital number {i}?", "answer": "Paris",
                                "type": "bridge"}) + "\n")
    return str(d)


def _cot_rows(root: Path, teacher: str) -> tuple[list, dict]:
    L = Layout(root)
    path = L.cot("custom", teacher, "hotpotqa")
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    settings = json.loads(path.with_name(path.name + ".meta.json").read_text())["settings"]
    return rows, settings


def test_a_stage_run_from_its_config_in_process_equals_the_scripts_result(tiny_models, tmp_path):
    """cot from a Config built in code (no flags) writes what the paper's script writes from its flags: the same
    rows, recorded with the same settings."""
    teacher, data_dir = str(tiny_models["qwen_small"]), _hotpotqa(tmp_path)
    cot = stages.get("cot")
    cfg = cot.Config(data="hotpotqa", model="custom", teacher=teacher, data_dir=data_dir, root=str(tmp_path / "a"),
                     backend="hf", max_new_tokens=6, limit=2)
    cot.run(cfg)
    load_script("cot/cot_generate_filter.py").main(
        ["--data", "hotpotqa", "--model", "custom", "--teacher", teacher, "--data-dir", data_dir,
         "--root", str(tmp_path / "b"), "--backend", "hf", "--max-new-tokens", "6", "--limit", "2"])
    a, b = _cot_rows(tmp_path / "a", teacher), _cot_rows(tmp_path / "b", teacher)
    assert a == b and len(a[0]) == 2 and a[1]["temperature"] == cot.TEMPERATURE


@pytest.mark.slow
def test_python_m_stage_with_a_config_file_equals_the_script_outside_the_checkout(tiny_models, tmp_path):
    """``python -m alice.stages.cot --config FILE`` with the package copied out of the checkout (as a non-editable
    install has it: no scripts beside it) writes what the script does."""
    teacher, data_dir = str(tiny_models["qwen_small"]), _hotpotqa(tmp_path)
    site = tmp_path / "site"
    shutil.copytree(REPO / "alice", site / "alice", ignore=shutil.ignore_patterns("__pycache__"))
    cot = stages.get("cot")
    cfg = cot.Config(data="hotpotqa", model="custom", teacher=teacher, data_dir=data_dir, root=str(tmp_path / "a"),
                     backend="hf", max_new_tokens=6, limit=2)
    f = common.write_file(cfg, tmp_path / "cot.json")
    env = dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "alice.stages.cot", "--config", str(f)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "cot/cot_generate_filter.py", "--data", "hotpotqa", "--model", "custom",
                        "--teacher", teacher, "--data-dir", data_dir, "--root", str(tmp_path / "b"), "--backend", "hf",
                        "--max-new-tokens", "6", "--limit", "2"], cwd=REPO, capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert _cot_rows(tmp_path / "a", teacher) == _cot_rows(tmp_path / "b", teacher)


# ---------------------------------------------------------------------------------------------------- the pipeline
def test_the_pipeline_calls_stages_without_argv_swaps_or_script_files():
    """The pipeline's modules drive the stages as functions: no sys.argv assignment, no script loaded from a file,
    no path of the checkout (a non-editable install runs the same)."""
    for name in ("pipeline.py", "pipeline_options.py", "steps.py"):
        src = (REPO / "alice" / name).read_text()
        assert not re.search(r"sys\.argv\s*=", src) and "spec_from_file_location" not in src, name
        assert not re.search(r"\bREPO\b", src), name


def test_in_process_steps_outside_the_checkout(tmp_path):
    """The package alone (copied out of the checkout) runs an in-process step (the report) and a dry run."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "alice", site / "alice", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import sys\nfrom alice import pipeline\n"
            "o = pipeline.options_from_argv(['--root', 'r'])\n"
            "steps = [st for st in pipeline.plan(o) if st.name == 'report']\n"
            "sys.exit(pipeline.execute(steps, pipeline.Layout.default('r').models / 'logs'))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1"))
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    assert list((tmp_path / "r" / "model_outputs" / "report").glob("*.md"))
    assert "report: ok" in r.stdout


def _options(argv):
    return pipeline.options_from_argv(argv)


def test_the_config_files_are_the_demo_and_paper_presets():
    """configs/demo.yaml says what the embedded demo (no flags) is; configs/paper.yaml what --paper is on its setting."""
    assert _options(["--config", str(CONFIGS / "demo.yaml")]) == _options([])
    assert _options(["--config", str(CONFIGS / "paper.yaml")]) == _options(
        ["--paper", "--model", "qwen2.5", "--data", "hotpotqa", "--teacher", "1.5B", "--student", "7B"])
    demo = common.read_file(CONFIGS / "demo.yaml")
    assert {k: demo[k] for k in pipeline.SCALE} == {k: pipeline.DEMO[k] for k in pipeline.SCALE}
    paper = common.read_file(CONFIGS / "paper.yaml")
    assert {k: paper[k] for k in pipeline.SCALE} == {k: pipeline.PAPER[k] for k in pipeline.SCALE}


def test_command_line_flags_override_the_config_file(tmp_path):
    o = _options(["--config", str(CONFIGS / "paper.yaml"), "--data", "gsm8k", "--train-limit", "5", "--no-original"])
    assert (o.paper, o.model, o.data, o.train_limit, o.original, o.num_samples) == (True, "qwen2.5", "gsm8k", 5, False, 100)
    f = tmp_path / "mine.yaml"
    f.write_text("data: hotpotqa\nnum_samples: 12\nstages:\n  cluster:\n    similarity_threshold: 0.8\n")
    o = _options(["--config", str(f), "--set", "cluster.similarity_threshold=0.7", "--num-samples", "6"])
    # beside the demo's own stage setting (a file without paper: true is a demo-scale run)
    assert (o.data, o.num_samples, o.stages) == ("hotpotqa", 6, {"cluster": {"similarity_threshold": 0.7},
                                                                  "final": {"final_tries": 12}})
    o = _options(["--config", str(f), "--set", "final.final_tries=2", "--paper"])
    assert o.stages == {"cluster": {"similarity_threshold": 0.8}, "final": {"final_tries": 2}}
    assert _options(["--paper"]).stages == {}  # --paper: none of the demo's
    assert _options(["--seed-exact"]).stages == {}  # the seed's one final sample, not the demo's 12 tries


def test_any_stage_setting_reaches_its_steps_and_only_them():
    """--set STAGE.FIELD=VALUE is on that stage's steps (typed in their configs), generate.* on every generating
    stage, nothing else changes."""
    base = pipeline.plan(_options(["--original"]))
    steps = pipeline.plan(_options(["--original", "--set", "cluster.similarity_threshold=0.8",
                                    "--set", "final.final_tries=2", "--set", "cot.temperature=0.5",
                                    "--set", "generate.kv_cache_gib=12", "--set", "train.weight_decay=0",
                                    "--set", "uncertainty.top_p=0.9"]))
    assert [(s.name, s.outputs) for s in steps] == [(s.name, s.outputs) for s in base]
    for st, old in zip(steps, base):
        if st.stage == "report":
            assert st.argv == old.argv
            continue
        cfg = st.config()
        assert cfg.similarity_threshold == 0.8 if st.stage == "cluster" else not hasattr(cfg, "similarity_threshold") \
            or cfg.similarity_threshold == 0.9
        if st.stage == "final":
            assert cfg.final_tries == 2 and st.argv.count("--final-tries") == 1
        if st.stage in ("cot", "label", "cluster", "uncertainty", "zeroshot", "final", "evaluate"):
            assert cfg.kv_cache_gib == 12
        if st.stage == "train":
            assert cfg.weight_decay == 0 and not hasattr(cfg, "kv_cache_gib")
        if st.stage == "uncertainty":
            assert (cfg.top_p, cfg.temperature) == (0.9, 0.9)


@pytest.mark.parametrize("bad,why", [
    ("cluster.similarity_threshold=high", "cluster.similarity_threshold: "),
    ("cluster.treshold=0.8", "not a setting of this stage"),
    ("clustering.similarity_threshold=0.8", "no stage 'clustering'"),
    ("train.student=7B", "not a setting of this stage"),  # set by the pipeline per step
    ("generate.backend=tpu", "'tpu' is not one of"),
    ("final.final_tries", "expected STAGE.FIELD=VALUE"),
])
def test_a_bad_stage_setting_is_a_usage_error_in_one_line(bad, why, capsys):
    with pytest.raises(SystemExit) as e:
        pipeline.main(["--set", bad, "--dry-run"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and why in err and "Traceback" not in err


@pytest.mark.parametrize("config", sorted(p.name for p in (CONFIGS / "results").glob("*.yaml")))
def test_a_result_config_plans_what_its_run_ran(config, tmp_path):
    """configs/results/<name>.yaml plans the steps of the command recorded in results/<name>.json (provenance), each
    step with the same settings (its parsed config), given the machine's folders on the command line."""
    name = config.removesuffix(".yaml")
    command = json.loads((REPO / "results" / f"{name}.json").read_text())["provenance"]["command"]
    argv = shlex.split(command)[3:]  # after python -m alice.pipeline
    where = ["--data-dir", str(tmp_path / "d"), "--root", str(tmp_path / "r")]
    for flag in ("--data-dir", "--root"):
        i = argv.index(flag)
        del argv[i:i + 2]
    recorded = pipeline.plan(_options([*argv, *where]))
    planned = pipeline.plan(_options(["--config", str(CONFIGS / "results" / config), *where]))
    assert [(s.name, s.outputs, s.after) for s in planned] == [(s.name, s.outputs, s.after) for s in recorded]
    for a, b in zip(planned, recorded):
        assert dataclasses.replace(a.config(), argv=None) == dataclasses.replace(b.config(), argv=None), a.name
    assert _options(["--config", str(CONFIGS / "results" / config)]).jobs == _options(argv).jobs
