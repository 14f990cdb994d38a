"""The pipeline's settings: the demo and paper presets, the flags, a settings file and per-stage settings.

    python -m alice.pipeline --config configs/paper.yaml --data gsm8k     # a file, a flag overriding it
    python -m alice.pipeline --set cluster.similarity_threshold=0.8 --set generate.kv_cache_gib=12

Precedence, lowest first: the demo (``DEMO``), the paper's scale with ``--paper`` (``PAPER``), a ``--config`` file
(YAML or JSON; keys are the flags' names with ``_``; ``stages:`` maps a stage to its settings), then the command line.
``configs/demo.yaml`` and ``configs/paper.yaml`` are these presets as files (tests/test_stages.py checks that they
say what ``DEMO`` / ``PAPER`` say). A stage setting (``--set STAGE.FIELD=VALUE``, or the file's ``stages:``) is any
field of that stage's config (``alice.stages.<stage>.Config``, i.e. any flag of its script) except the ones the
pipeline sets per step (models, data, method, folders); ``generate.FIELD`` sets a generation option
(``alice.options.GenerationOptions``) of every generating stage.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from . import ablations, cli, datasets, methods, stages
from .options import DEFAULT_MAX_NEW_TOKENS, DEFAULT_NUM_SAMPLES, GenerationOptions
from .sft_config import PAPER as TRAIN_PAPER
from .stages import common as stage_common

# The embedded demo, sized for a 2-core CPU machine (README: its wall time and a worked example). It runs every
# mechanism of Alice: 8 samples of up to 384 tokens (the 0.5B's gsm8k answers average ~280 tokens; at 256 most stop
# before their final number, and unreadable answers form no cluster) on 4 questions, so that the teacher's samples
# disagree on some questions (several clusters) and the summarizer, zero-shot and final stages generate. It leaves out
# the original-W2S comparison (``--original`` adds it), which is the paper's baseline, not part of Alice: its qa
# teacher, two label steps and two 1.5B student trainings took 10 min 36 s of the 20 min 16 s measured for the first
# 9 steps of the earlier demo (bench/README.md), before their two evaluations.
DEMO = dict(
    model="qwen2.5-coder",
    data="gsm8k",
    teacher="0.5B",
    student="1.5B",
    train_limit=4,  # questions per training-side step (so each SFT sees at most 4 rows)
    eval_limit=4,  # test questions per evaluation: a smoke run, labelled as such
    num_samples=8,
    max_new_tokens=384,
    epochs=1,
    lora=True,
    lr=1e-4,  # LoRA moves ~10x slower than full fine-tuning: the paper's 1e-5 would leave the demo's models unchanged
    original=False,  # the original-W2S baseline (qa teacher, labels, students): the paper's comparison, not Alice
)
# The demo's stage settings (``--set`` and a file's ``stages:`` override them; --paper has none). 12 final tries: in
# the demo the one several-cluster question's first 10 final samples of the 1.5B student are copies of the prompt's
# example or bare answers (rejected by the well-formedness check, alice.grading.well_formed), so at the usual 4 no
# 'new' row is made; 12 cost 8 s more than 4 on 2 cores (results/demo_cpu.json).
DEMO_STAGES = {"final": {"final_tries": 12}}
# --paper: the paper's scale (no limits, N=100 samples, full fine-tuning for 3 epochs, 4096 new tokens).
# Its values are the defaults of the stage scripts (alice.options, alice.sft_config.PAPER), not written again here;
# epochs prints as in the paper's commands ("3", not "3.0").
PAPER = dict(train_limit=None, eval_limit=None, num_samples=DEFAULT_NUM_SAMPLES, max_new_tokens=None,
             epochs=int(TRAIN_PAPER.epochs) if float(TRAIN_PAPER.epochs).is_integer() else TRAIN_PAPER.epochs,
             lora=False, lr=None, original=True)


def _num_samples(text: str) -> int:
    n = cli.positive_int(text)
    if n < 2:
        raise argparse.ArgumentTypeError("must be at least 2 (a cluster needs two answers)")
    return n


def _ablations(text: str) -> tuple[str, ...]:
    try:
        return ablations.parse(text)
    except ablations.AblationError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m alice.pipeline",
        description="Run a whole Alice setting end to end (default: the embedded CPU demo).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default=DEMO["model"], choices=cli.FAMILY_CHOICES,
                   help="model family (see README), or 'custom' with folders/ids")
    p.add_argument("--data", default=DEMO["data"], choices=tuple(datasets.DATASETS))
    p.add_argument("--teacher", default=DEMO["teacher"])
    p.add_argument("--student", default=DEMO["student"])
    p.add_argument("--midlevel", default=None, help="mid-level size: adds cascade Alice")
    p.add_argument("--paper", action="store_true", help="the paper's scale: no limits, N=100, full FT, 3 epochs")
    p.add_argument("--train-limit", type=cli.positive_int, default=argparse.SUPPRESS,
                   help=f"questions/rows per training-side step (demo {DEMO['train_limit']})")
    p.add_argument("--eval-limit", type=cli.positive_int, default=argparse.SUPPRESS,
                   help=f"test questions per evaluation (demo {DEMO['eval_limit']})")
    p.add_argument("--num-samples", type=_num_samples, default=argparse.SUPPRESS,
                   help=f"Alice samples per question (demo {DEMO['num_samples']}, paper {PAPER['num_samples']})")
    p.add_argument("--max-new-tokens", type=cli.positive_int, default=argparse.SUPPRESS,
                   help=f"generation cap (demo {DEMO['max_new_tokens']}, paper {DEFAULT_MAX_NEW_TOKENS})")
    p.add_argument("--epochs", type=cli.positive_float, default=argparse.SUPPRESS,
                   help=f"SFT epochs (demo {DEMO['epochs']}, paper {PAPER['epochs']})")
    p.add_argument("--lora", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                   help="LoRA SFT (demo: on)")
    p.add_argument("--lr", type=cli.positive_float, default=argparse.SUPPRESS,
                   help=f"SFT learning rate (demo {DEMO['lr']} for LoRA; paper {TRAIN_PAPER.lr:g})".replace("e-0", "e-"))
    p.add_argument("--original", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                   help="also run the original-W2S baseline (qa teacher, qa/cot labels, students; demo: off, --paper: on)")
    p.add_argument("--single-hop", action=argparse.BooleanOptionalAction, default=True,
                   help="with --midlevel: also the single-hop rows (Alice teacher -> student, original W2S qa/cot); "
                        "--no-single-hop runs the baselines and the cascade rows only (a cascade that fits a GPU hold)")
    p.add_argument("--summarizer-model", default=None,
                   help="uncertainty summarizer (default: the student in demo mode, Llama-3-70B with --paper)")
    p.add_argument("--embedding-model", default=None, help="sentence-transformers model for QA clustering")
    p.add_argument("--backend", default="auto", choices=("auto", "vllm", "hf"))
    p.add_argument("--with-naive", action="store_true", help="also evaluate the untrained teacher and student")
    p.add_argument("--data-dir", default=None, help="local data folder (default $ALICE_DATA_DIR, else the Hub)")
    p.add_argument("--root", default=None, help="folder holding data/ and model_outputs/ (default .)")
    p.add_argument("--python", default=sys.executable, help=argparse.SUPPRESS)
    p.add_argument("--full-determinism", action=argparse.BooleanOptionalAction, default=True,
                   help="training steps with --full-determinism: the same command trains the same weights (measured "
                        "on an H200: byte-identical weights twice, at the same speed; results/determinism_gpu.json)")
    p.add_argument("--extra-sft-args", default="", help="extra flags for every training/SFT.py call (quoted)")
    p.add_argument("--extra-gen-args", default="", help="extra flags for every generating stage (quoted)")
    p.add_argument("--gpus", type=cli.positive_int, default=None,
                   help="GPUs the run may use (default: all visible); several: training steps run on all of them "
                        "(DeepSpeed ZeRO-2, or ZeRO-3 / CPU offload when that does not fit; docs/scale.md)")
    p.add_argument("--gpu-memory-gib", type=cli.positive_float, default=None,
                   help="plan for GPUs of this size (with --gpus: hardware this machine need not have, e.g. for "
                        "--dry-run); default: the visible GPUs' memory")
    p.add_argument("--seed-exact", action="store_true",
                   help="the seed's behaviour where this project deliberately differs (docs/seed-differences.md): its "
                        "CoT filter, raw clustering keys, instructor-large for QA, one final sample kept whatever its form")
    p.add_argument("--ablations", type=_ablations, default=(), metavar="all|a,b,...",
                   help="also run these ablations of Alice's proactive step (docs/ablations.md), each trained, evaluated "
                        "and reported with its paired difference to Alice: " + "; ".join(
                            f"{letter} {name} ({what})" for name, (letter, what) in methods.ABLATIONS.items()))
    p.add_argument("--dry-run", action="store_true",
                   help="print every step's command and resource plan (memory per GPU, GPUs, strategy) without running")
    p.add_argument("--subprocess", action="store_true",
                   help="run every step as its own process (each loads its model) instead of in this process")
    p.add_argument("--jobs", type=cli.positive_int, default=1,
                   help="run up to N independent steps at once, each in its own process, within the GPU's memory "
                        "(each step's planned share; on a CPU one training step at a time); give each engine a share "
                        "with --set generate.kv_cache_gib=G (README)")
    p.add_argument("--shared-engines", action=argparse.BooleanOptionalAction, default=False,
                   help="with --jobs: run the generating steps one after another in one long-lived process, sharing "
                        "loaded engines (a trained model's weights go into a living engine of its shape), beside the "
                        "training steps' processes (docs/pipeline.md)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a settings file (YAML/JSON: flag names with _ as keys, 'stages:' for stage settings; e.g. "
                        "configs/paper.yaml); flags given beside it override it")
    p.add_argument("--set", dest="stage_settings", action="append", default=[], metavar="STAGE.FIELD=VALUE",
                   help=f"a setting of one stage ({', '.join(stages.NAMES)}; 'generate': every generating stage), "
                        "e.g. cluster.similarity_threshold=0.8, final.final_tries=2, cot.temperature=0.5, "
                        "train.weight_decay=0; any flag of the stage's script (repeatable)")
    return p


SCALE = ("train_limit", "eval_limit", "num_samples", "max_new_tokens", "epochs", "lora", "lr", "original")  # demo / --paper


@dataclass(frozen=True)
class PipelineOptions:
    """The pipeline's flags, typed, with the run's scale resolved: the demo's, or the paper's with ``paper``, each
    overridden by its own flag (``from_args``). ``plan`` / ``run`` take these, never the Namespace."""

    model: str
    data: str
    teacher: str
    student: str
    midlevel: str | None
    paper: bool
    train_limit: int | None
    eval_limit: int | None
    num_samples: int
    max_new_tokens: int | None
    epochs: float
    lora: bool
    lr: float | None
    original: bool
    summarizer_model: str | None
    embedding_model: str | None
    backend: str
    with_naive: bool
    data_dir: str | None
    root: str | None
    python: str
    full_determinism: bool
    extra_sft_args: str
    extra_gen_args: str
    dry_run: bool
    subprocess: bool
    jobs: int
    gpus: int | None = None
    gpu_memory_gib: float | None = None
    seed_exact: bool = False
    ablations: tuple[str, ...] = ()
    shared_engines: bool = False
    single_hop: bool = True
    # stage -> {field: value}: settings of one stage's config ('generate': of every generating stage), checked
    stages: dict = field(default_factory=dict)

    @classmethod
    def from_args(cls, args: argparse.Namespace, stage_settings: dict | None = None) -> "PipelineOptions":
        """From ``build_parser()``'s parsed flags: scale settings are the demo's, or the paper's with --paper, each
        overridable by its flag."""
        scale = dict(DEMO, **PAPER) if args.paper else dict(DEMO)
        flags = dict(vars(args))
        for k in SCALE:
            flags.setdefault(k, scale[k])
        settings = {} if args.paper else {st: dict(v) for st, v in DEMO_STAGES.items()}
        if getattr(args, "seed_exact", False):  # the seed's final stage keeps its one sample: not the demo's 12 tries
            settings.pop("final", None)
        for st, values in (stage_settings or {}).items():
            settings.setdefault(st, {}).update(values)
        return cli.options(cls, argparse.Namespace(**flags), stages=settings)


def parse(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace, dict]:
    """The parser, the parsed flags (a ``--config`` file's values as their defaults) and the stage settings (the
    file's ``stages:``, then each ``--set``), checked: a bad one is a usage error in one line."""
    p = build_parser()
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    file_stages = {}
    if known.config:
        try:
            values = stage_common.read_file(known.config)
        except stage_common.ConfigError as e:
            p.error(str(e))
        file_stages = values.pop("stages", None) or {}
        if not isinstance(file_stages, dict) or not all(isinstance(v, dict) for v in file_stages.values()):
            p.error(f"{known.config}: 'stages' must map a stage to its settings (field: value)")
        stage_common.apply_defaults(p, values, known.config)
    args = p.parse_args(argv)
    merged = {k: dict(v) for k, v in file_stages.items()}
    for item in args.stage_settings:
        key, eq, value = item.partition("=")
        stage, dot, name = key.partition(".")
        if not (eq and dot and stage and name):
            p.error(f"--set {item}: expected STAGE.FIELD=VALUE, e.g. cluster.similarity_threshold=0.8")
        merged.setdefault(stage, {})[name] = value
    try:
        return p, args, check_stage_settings(merged)
    except stage_common.ConfigError as e:
        p.error(str(e))


def options_from_argv(argv: list[str] | None = None) -> PipelineOptions:
    """The typed options of a pipeline command line (``parse``, then ``PipelineOptions.from_args``)."""
    _, args, stage_settings = parse(argv)
    return PipelineOptions.from_args(args, stage_settings)


def options_from_command(command: str) -> PipelineOptions | None:
    """The typed options of a recorded command line (``python -m alice.pipeline <flags>``, as a results file or a run's
    command.txt has it); None when it is not one, or this checkout no longer parses its flags."""
    import shlex

    argv = shlex.split(command)
    if "alice.pipeline" not in argv:
        return None
    try:
        return options_from_argv(argv[argv.index("alice.pipeline") + 1:])
    except (SystemExit, ValueError):  # a usage error (argparse exits), a bad stage setting (ConfigError)
        return None


# set by the pipeline for each step (the setting, its models, method and folders, --seed-exact, the ablation): not
# a stage setting
PER_STEP = ("data", "model", "teacher", "student", "midlevel", "method", "type", "ours_wts_type", "original_wts_type",
            "data_dir", "root", "overwrite", "output_dir", "argv", "config", "ablation", "seed_exact")
GENERATE = "generate"  # the stage settings that go to every generating stage


def generating(name: str) -> bool:
    return issubclass(stages.get(name).Config, GenerationOptions)


def check_stage_settings(values: dict) -> dict:
    """``{stage: {field: value}}`` with each value converted as the stage's flag converts it; an unknown stage or
    field, a per-step field or a bad value is a ``ConfigError`` naming the choices."""
    out = {}
    for stage, fields in values.items():
        if stage != GENERATE and stage not in stages.NAMES:
            raise stage_common.ConfigError(f"no stage {stage!r} (stages: {', '.join(stages.NAMES)}, {GENERATE})")
        probe = stages.get("evaluate" if stage == GENERATE else stage)
        parser = probe.build_parser()
        fields_ = GenerationOptions.__dataclass_fields__ if stage == GENERATE else probe.Config.__dataclass_fields__
        allowed = (set(fields_) & stage_common.dests(parser)) - set(PER_STEP)
        out[stage] = {}
        for name, value in fields.items():
            name = str(name).replace("-", "_")
            if name not in allowed:
                raise stage_common.ConfigError(f"{stage}.{name}: not a setting of this stage (settings: "
                                               f"{', '.join(sorted(allowed))})")
            out[stage][name] = stage_common.convert(parser, name, value, f"{stage}.{name}")
    return out


def stage_flags(name: str, stage_settings: dict) -> list[tuple[str, object]]:
    """The settings of stage ``name`` in a run: its generation settings first, then its own."""
    out = dict(stage_settings.get(GENERATE, {})) if generating(name) else {}
    out.update(stage_settings.get(name, {}))
    return list(out.items())


def settings(o: PipelineOptions) -> dict:
    """The run's scale settings (``SCALE``) as a dict."""
    return {k: getattr(o, k) for k in SCALE}
