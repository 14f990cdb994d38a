"""``Generator``: one model, one backend (vLLM: ``vllm_engine.VLLMBackend``; Hugging Face: ``hf.HFBackend``), chat
completions for lists of conversations; its engine loads on the first ``generate`` and may be kept in the pool."""

from __future__ import annotations

import time

from .. import records
from ..options import DEFAULT_GPU_MEMORY_UTILIZATION, GenerationOptions
from . import common, pool
from .common import (CB_CHUNK, HF_BATCHING, SEEDING, GenerationError, Sampling, chat_prompt_ids, check_weights_finite,
                     resolve_backend)
from .hf import HFBackend
from .vllm_engine import VLLMBackend


class Generator(HFBackend, VLLMBackend):
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
        self._key: tuple | None = None  # the pool key of the loaded engine (when loaded inside an engine pool)
        self._config: dict | None = None  # the loaded model's config.json (a pooled engine's shape)
        self._sleeps = False  # the engine was made with vLLM's sleep mode (a GPU, inside an engine pool)

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
            return max(2048, self.batch_size or 0) if common._cuda_available() else 64
        if self.hf_batching == "continuous" or (self.hf_batching == "auto" and common._cuda_available()):
            return max(CB_CHUNK, self.batch_size or 0)  # continuous batching: many requests in flight
        return max(64, self.batch_size or 0)  # hf: at least one whole --batch-size batch per generate() call

    # ---- loading --------------------------------------------------------------------------------------
    def tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.model, token=common._hf_token())
            tok.padding_side = "left"
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            self._tok = tok
        return self._tok

    def pool_key(self) -> tuple:
        """What must match for a pooled engine to serve this Generator as it is: what the model is, by content
        (``records.model_identity``: a retrained folder is another model), then the engine settings (a pooled engine of
        the same settings and another model of the same shape can take this model's weights: ``_refresh``)."""
        engine_rng = self.seed if self.seeding == "engine" else None  # per-request seeds: any engine seed serves
        max_seqs = self._batch_size_given if self.backend == "vllm" else None  # hf: a per-call setting
        return (records.model_identity(self.model), self.backend, self.dtype, self.tensor_parallel_size,
                self.gpu_memory_utilization, self.max_model_len, self.enforce_eager, self.torch_compile,
                self.kv_cache_gib, self.batch_invariant, engine_rng, max_seqs)

    def _shape(self) -> str | None:
        """This model's architecture config and tokenizer, as ``pool.shape_of`` compares them."""
        return pool.shape_of(pool.read_config(self.model), self.tokenizer())

    def _load(self) -> None:
        if self._engine is not None:
            return
        key = self._key = self.pool_key() if pool.active() else None
        if key is not None:
            loaded = pool.take(key)
            if loaded is not None and self._adopt(loaded, refresh=loaded.asleep):  # asleep: weights come back from disk
                return
            loaded = pool.take_compatible(key, self._shape) if self.backend == "vllm" else None
            if loaded is not None and self._adopt(loaded, refresh=True):
                return
            pool.make_room(self.model, self.backend)  # another model: free the oldest pooled engines first, to make room
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
        self._config = pool.read_config(self.model)
        pool.COUNTS["load"] += 1
        print(f"[generation] loaded {self.model} ({self.backend}) in {time.perf_counter() - t0:.1f}s", flush=True)

    def _adopt(self, loaded: "pool.Loaded", refresh: bool) -> bool:
        """Serve this Generator from a pooled engine: as it is (the same model), or with this model's weights loaded
        into it (``refresh``: another model of the same shape, or the same model whose engine slept). False when
        the weights could not be loaded: the engine is then freed and the caller loads this model anew."""
        if refresh:
            t0 = time.perf_counter()
            check_weights_finite(self.model)
            try:
                self._reload_vllm_weights(loaded.engine, self.model, woke=loaded.asleep)
            except Exception as e:  # noqa: BLE001 - an engine that cannot take new weights is replaced
                print(f"[generation] could not load {self.model} into the engine of {loaded.model} "
                      f"({type(e).__name__}: {e}); starting a new engine", flush=True)
                pool.close_engine(loaded.backend or self.backend, loaded.engine)
                return False
            tok = self.tokenizer()
            self._stop = self._stop_ids(tok)  # this model's generation_config may end a turn at other tokens
            self._config = pool.read_config(self.model)
            pool.COUNTS["wake" if loaded.model == self.model and loaded.asleep else "refresh"] += 1
            print(f"[generation] loaded {self.model} into the living engine of {loaded.model} ({self.backend}) in "
                  f"{time.perf_counter() - t0:.1f}s", flush=True)
        else:
            self._tok, self._stop, self._config = loaded.tokenizer, loaded.stop, loaded.config
            pool.COUNTS["reuse"] += 1
            print(f"[generation] reusing the loaded engine of {self.model} ({self.backend})", flush=True)
        self._engine, self._max_len, self._sleeps = loaded.engine, loaded.max_len, loaded.sleeps
        if self.batch_size is None:
            self.batch_size = loaded.batch_size
        return True

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
        if pool.active():
            key = self._key or self.pool_key()  # what was loaded, not what the folder holds now
            pool.keep(key, pool.Loaded(engine, self._tok, self._stop, getattr(self, "_max_len", None), self.batch_size,
                                       model=self.model, config=self._config, backend=self.backend,
                                       sleeps=self._sleeps))
            return
        pool.close_engine(self.backend, engine)

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
