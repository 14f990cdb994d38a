
import pytest

from alice import cli, registry


@pytest.mark.parametrize(
    "family,size,expected",
    [
        ("qwen2.5", "1.5B", "Qwen/Qwen2.5-1.5B-Instruct"),
        ("qwen2.5", "7B", "Qwen/Qwen2.5-7B-Instruct"),
        ("llama3", "1B", "meta-llama/Llama-3.2-1B-Instruct"),
        ("llama3", "3B", "meta-llama/Llama-3.2-3B-Instruct"),
        # the seed's `if teacher == '1B' or '3B'` sent 8B to Llama-3.2, which has no 8B model
        ("llama3", "8B", "meta-llama/Llama-3.1-8B-Instruct"),
        ("qwen2.5-coder", "0.5B", "Qwen/Qwen2.5-Coder-0.5B-Instruct"),
        ("qwen2.5-coder", "7B", "Qwen/Qwen2.5-Coder-7B-Instruct"),
        ("smollm2", "135M", "HuggingFaceTB/SmolLM2-135M-Instruct"),
        ("smollm2", "1.7B", "HuggingFaceTB/SmolLM2-1.7B-Instruct"),
    ],
)
def test_resolve(family, size, expected):
    assert registry.resolve_model(family, size) == expected


def test_custom_ids_and_folders_pass_through(tmp_path):
    assert registry.resolve_model("llama3", "my-org/my-model") == "my-org/my-model"
    folder = tmp_path / "trained"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"w")
    assert registry.resolve_model("custom", str(folder)) == str(folder)
    assert registry.model_tag("1.5B") == "1.5B"
    assert registry.model_tag("my-org/my-model") == "my-org--my-model"
    # a folder: its name and a short fingerprint of its content (tests/test_integrity.py: two folders of one name)
    assert registry.model_tag(str(folder) + "/") == registry.model_tag(str(folder))
    assert registry.model_tag(str(folder)).startswith("trained-")


def test_unknown_family_and_size_list_choices():
    with pytest.raises(registry.RegistryError, match="choose from .*llama3.*qwen2.5"):
        registry.resolve_model("gpt", "1B")
    with pytest.raises(registry.RegistryError, match="choose from 1B, 3B, 8B"):
        registry.resolve_model("llama3", "7B")
    with pytest.raises(registry.RegistryError):
        registry.resolve_model("custom", "1B")  # custom needs an id or folder


def test_cli_reports_unknown_size_as_usage_error(capsys):
    p = cli.parser("x", roles=("teacher",))
    args = p.parse_args(["--data", "gsm8k", "--model", "llama3", "--teacher", "7B"])
    with pytest.raises(SystemExit) as e:
        cli.resolve(p, args, "teacher")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--teacher" in err and "choose from 1B, 3B, 8B" in err and "Traceback" not in err


def test_cli_rejects_unknown_dataset(capsys):
    p = cli.parser("x")
    with pytest.raises(SystemExit):
        p.parse_args(["--data", "mmlu", "--model", "qwen2.5"])
    assert "invalid choice: 'mmlu'" in capsys.readouterr().err


def test_summarizer_prefers_local_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert registry.resolve_summarizer() == registry.SUMMARIZER_HUB_ID
    (tmp_path / "Meta-Llama-3-70B-Instruct").mkdir()
    assert registry.resolve_summarizer() == registry.SUMMARIZER_LOCAL_DIR
    assert registry.resolve_summarizer("org/other") == "org/other"


def test_a_missing_local_folder_is_one_line(tmp_path, capsys):
    for size in (str(tmp_path / "nope"), "./models/nope", "../x/y", "~/nope-alice-model"):
        with pytest.raises(registry.RegistryError, match=r"no model folder .*pass an existing folder"):
            registry.resolve_model("custom", size)
    assert registry.resolve_model("custom", "Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    from alice.testing import load_script

    ev = load_script("evaluation.py")
    with pytest.raises(SystemExit) as e:
        ev.main(["--data", "gsm8k", "--model", "custom", "--student", str(tmp_path / "nope"), "--method", "naive",
                 "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err and "no model folder" in err.strip().splitlines()[-1]
