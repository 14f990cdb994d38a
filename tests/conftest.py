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
