"""Typed options and the defaults they start from: each default is written here once.

The stage scripts parse their flags (``alice.cli``) and build these dataclasses once (``cli.options``,
``cli.generation_options``; the pipeline: ``pipeline.PipelineOptions``); the library
takes the dataclasses, never an ``argparse.Namespace``. Training options and the paper's training settings are
``alice.sft.TrainOptions`` / ``alice.sft.PAPER``.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---- generation -------------------------------------------------------------------------------------
DEFAULT_MAX_NEW_TOKENS = 4096  # the paper's max_tokens
DEFAULT_GPU_MEMORY_UTILIZATION = 0.6  # vLLM: the fraction of GPU memory an engine may take


@dataclass(frozen=True)
class StageSampling:
    """A stage's sampling settings (the paper's scripts' vLLM ``SamplingParams``)."""

    temperature: float
    top_p: float


# Every stage's sampling, in one table (the seed's values).
SAMPLING = {
    "cot": StageSampling(0.7, 0.95),  # step 1: the teacher's chain-of-thought
    "original": StageSampling(0.6, 0.95),  # original W2S: the trained teacher's labels
    "alice": StageSampling(0.9, 0.95),  # every Alice stage (samples, summarizer, zero-shot, final)
    "eval": StageSampling(0.0, 1.0),  # evaluation: greedy
}


@dataclass(frozen=True)
class GenerationOptions:
    """The flags of ``cli.add_generation_args``: backend, engine and run-size settings of a generating stage."""

    backend: str = "auto"
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1  # worker processes, one engine (GPU) each, sharing a stage's prompts
    engines_per_gpu: int = 1  # data parallel: worker engines sharing one GPU (a small model leaves the card idle)
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    batch_size: int | None = None
    hf_batching: str = "auto"
    hf_static_cache: bool = False
    enforce_eager: bool = False  # vLLM on a GPU: no torch.compile / CUDA graphs (faster start-up)
    torch_compile: bool = True  # vLLM on a GPU: False = CUDA graphs for decode steps without torch.compile
    kv_cache_gib: float | None = None  # vLLM on a GPU: a fixed KV cache instead of one sized by memory profiling
    batch_invariant: bool = False  # vLLM: VLLM_BATCH_INVARIANT=1 (measured: not invariant on an H200, see --help)
    seeding: str = "request"  # vLLM sampling: "request" = a seed per request; "engine" = the engine's one RNG (--help)
    dtype: str | None = None
    max_new_tokens: int | None = None  # None: DEFAULT_MAX_NEW_TOKENS
    limit: int | None = None
    seed: int = 0
    overwrite: bool = False

    def recorded(self) -> dict:
        """Engine settings that change what a stage writes, beyond its sampling: recorded with each output (alice.fresh)
        only when switched on, so that files made before such a setting existed stay valid."""
        out = {"batch_invariant": True} if self.batch_invariant else {}
        return dict(out, seeding="engine") if self.seeding == "engine" else out


# ---- Alice ------------------------------------------------------------------------------------------
DEFAULT_NUM_SAMPLES = 100  # the paper's N answers per question
# cosine above which two answers are the same: the seed's (instructor-large); for MiniLM see
# results/threshold_calibration.json
DEFAULT_THRESHOLD = 0.9
# Alice's final stage: samples per question, the first well-formed one kept (grading.well_formed); a question with
# none is dropped from the training file. Not in the seed (it kept its one sample, whatever its form): see README.
FINAL_TRIES = 4
