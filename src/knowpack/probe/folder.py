"""A label folder: every answer (``responses.parquet``) and each question's SliCK category (``labels.parquet``),
read only through :class:`LabelFolder`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from knowpack.runfolder import StageFolder, read_parquet

if TYPE_CHECKING:
    import pandas as pd

RESPONSES_FILE = "responses.parquet"
LABELS_FILE = "labels.parquet"
CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
RESPONSES_SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),
        ("prompt_id", pa.int16()),
        ("sample_id", pa.int16()),
        ("answer", pa.string()),
        ("correct_lenient", pa.bool_()),
        ("correct_strict", pa.bool_()),
    ]
)
LABELS_SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),
        ("p_greedy", pa.float64()),
        ("p_sample", pa.float64()),
        ("p_greedy_strict", pa.float64()),
        ("p_sample_strict", pa.float64()),
        ("category", pa.string()),
        ("category_strict", pa.string()),
    ]
)


class LabelFolder(StageFolder):
    """The labels of one model (or one adapter of it) on one question set, with the probe settings used."""

    stage = "label"
    command = "label"
    what = "label folder"

    @property
    def questions_path(self) -> Path:
        return self.input_path("questions")

    @property
    def settings(self) -> dict[str, Any]:
        """The result-affecting probe settings (the manifest's config)."""
        return self.config

    @property
    def model(self) -> str | None:
        return self.manifest.get("model") or self.config.get("model")

    def responses(self, columns: list[str] | None = None) -> pd.DataFrame:
        schema = RESPONSES_SCHEMA if columns is None else pa.schema([RESPONSES_SCHEMA.field(c) for c in columns])
        return read_parquet(self.file(RESPONSES_FILE), schema).to_pandas()

    def labels(self, columns: list[str] | None = None) -> pd.DataFrame:
        schema = LABELS_SCHEMA if columns is None else pa.schema([LABELS_SCHEMA.field(c) for c in columns])
        return read_parquet(self.file(LABELS_FILE), schema).to_pandas()
