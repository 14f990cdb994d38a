"""The Hugging Face ``generate`` backend of ``Generator``: continuous batching (transformers' ``generate_batch``) or
padded, length-sorted batches whose samples each come from their own seeded stream (``row_seed``)."""

from __future__ import annotations

import hashlib
import json
import time

from .common import DEFAULT_HF_BATCH, GenerationError, Sampling, _hf_token, _Rate, print_generated, stop_token_ids


class HFBackend:
    """The hf methods of ``Generator`` (a mixin: it uses the Generator's settings, tokenizer and stop tokens)."""

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
        print_generated(desc, len(prompts), sampling.n, n_tok, dt, "hf continuous batching")
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
        t0, total = time.perf_counter(), 0
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
                total += n_tok
                bar.set_postfix(tok_s=rate.add(n_tok), refresh=False)
                bar.update(len(batch))
        print_generated(desc, len(prompts), sampling.n, total, time.perf_counter() - t0, f"hf padded batches of {bs}")
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

