import os

import pytest

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFLINE_DATA = os.path.abspath(os.path.join(REPO, "..", "shared", "offline", "data"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Folders of tiny random models sharing one ChatML tokenizer: qwen_small, qwen_large, llama, tokenizer."""
    from alice.testing import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def offline_data():
    """The offline copy of the four datasets (shared/offline/data); skipped when absent."""
    if not os.path.isdir(OFFLINE_DATA):
        pytest.skip("shared/offline/data is not beside the repository")
    return OFFLINE_DATA


@pytest.fixture(scope="session")
def spiky(tiny_models, tmp_path_factory):
    """The small fixture model with larger random weights: diverse (not all-newline) greedy text with clear margins."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, out = str(tiny_models["qwen_small"]), tmp_path_factory.mktemp("spiky") / "model"
    model = AutoModelForCausalLM.from_pretrained(src)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(src).save_pretrained(str(out))
    return str(out)
