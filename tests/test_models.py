import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import write_unsupported_gguf
from knowpack.errors import InputError
from knowpack.models import load_model, resolve_model


def test_local_folder_loads_with_a_fingerprint_that_tracks_the_weights(tiny_model_dir, tmp_path):
    loaded = load_model(str(tiny_model_dir), device="cpu")
    assert loaded.chat, "the tokenizer carries SmolLM2's chat template"
    assert loaded.fingerprint.startswith("dir:")
    assert load_model(str(tiny_model_dir), device="cpu").fingerprint == loaded.fingerprint

    changed = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        changed.model.embed_tokens.weight.add_(1.0)
    changed.save_pretrained(tmp_path / "changed")
    loaded.tokenizer.save_pretrained(tmp_path / "changed")
    assert resolve_model(str(tmp_path / "changed"))[1] != loaded.fingerprint


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(InputError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_missing_gguf_and_unsupported_architecture_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "absent.gguf"))
    path = write_unsupported_gguf(tmp_path / "odd.gguf")
    with pytest.raises(InputError, match=r"odd.gguf: cannot load this GGUF") as err:
        resolve_model(str(path))
    assert "\n" not in str(err.value)


def test_unknown_model_id_offline_says_what_to_do(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="not an embedded model .* hub cannot be reached"):
        resolve_model("no-such-org/no-such-model")
