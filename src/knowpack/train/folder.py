"""A training run folder: the exact rows trained on, the loss log and an adapter per epoch, read only through
:class:`TrainRun`.

Layout: ``train_set.parquet``, ``train_log.parquet``, ``epochs/epoch_NN/{adapter_model.safetensors,
adapter_config.json, optimizer.safetensors}`` (an epoch folder appears, by an atomic rename, only when complete);
a full fine-tune (``--method full``) saves ``full_weights.safetensors`` + ``full_weights.json`` instead of the
adapter files.
The manifest names the label folder and questions the run was drawn from and the packed facts (``unknown_ids``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from knowpack.errors import InputError
from knowpack.runfolder import StageFolder, read_parquet

if TYPE_CHECKING:
    import pandas as pd

    from knowpack.probe.folder import LabelFolder

ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
OPTIMIZER_FILE = "optimizer.safetensors"
FULL_WEIGHTS_FILE = "full_weights.safetensors"
FULL_CONFIG_FILE = "full_weights.json"
WEIGHT_FILES = (ADAPTER_FILE, FULL_WEIGHTS_FILE)  # an epoch folder holds one of them
TRAIN_SET_FILE = "train_set.parquet"
TRAIN_LOG_FILE = "train_log.parquet"
EPOCHS_DIR = "epochs"
TRAIN_SET_SCHEMA = pa.schema(
    [
        ("row_id", pa.int64()),
        ("kind", pa.string()),
        ("question_id", pa.string()),
        ("prompt", pa.string()),
        ("target", pa.string()),
    ]
)
TRAIN_LOG_SCHEMA = pa.schema(
    [("epoch", pa.int32()), ("step", pa.int32()), ("loss", pa.float64()), ("tokens", pa.int64()),
     ("seconds", pa.float64())]
)


def method_of(config: dict[str, Any]) -> str:
    """The training method of a run's config; runs made before methods existed are LoRA runs."""
    return config.get("method", "lora")


def epoch_name(epoch: int) -> str:
    return f"epoch_{epoch:02d}"


class TrainRun(StageFolder):
    """A complete training run: its adapters by epoch and what they were trained on."""

    stage = "train"
    command = "train"
    what = "training run folder"

    def __init__(self, path, *, verify: bool = True):
        super().__init__(path, verify=verify)
        self.epochs: dict[int, Path] = {
            int(folder.name.removeprefix("epoch_")): folder
            for folder in sorted((self.path / EPOCHS_DIR).glob("epoch_[0-9]*"))
            if any((folder / name).is_file() for name in WEIGHT_FILES)
        }
        if not self.epochs:
            raise InputError(f"{self.path}: no complete epoch ({EPOCHS_DIR}/epoch_NN/{ADAPTER_FILE})")

    @property
    def labels_path(self) -> Path:
        return self.input_path("labels")

    def labels(self) -> LabelFolder:
        from knowpack.probe.folder import LabelFolder

        return LabelFolder(self.labels_path)

    @property
    def questions_path(self) -> Path:
        return self.input_path("questions")

    @property
    def model_fingerprint(self) -> str | None:
        return self.manifest.get("extra_key", {}).get("model")

    @property
    def method(self) -> str:
        return method_of(self.config)

    @property
    def unknown_ids(self) -> list[str]:
        return list(self.manifest.get("unknown_ids") or [])

    def train_set(self) -> pd.DataFrame:
        return read_parquet(self.file(TRAIN_SET_FILE), TRAIN_SET_SCHEMA).to_pandas()

    def shift_epochs(self, which: str) -> list[int]:
        return sorted(self.epochs) if which == "all" else [max(self.epochs)]

    @property
    def settings(self) -> dict[str, Any]:
        return self.config
