"""A capacity folder, read only through :class:`Capacity`.

Layout::

    manifest.json        the stage's manifest (config, inputs, the search options of the last invocation)
    data/                the embedded question set (with --facts: plus the user's facts) and its labels
    sweep/               the sweep of every run the searches looked at (runs/<run_id>/ with eval/, sweep.parquet)
    points.parquet       one row per run: method, rank, seed, unknown, the figures, passed, fitted values, residuals
    searches.parquet     one row per (method, rank, seed): held, broke, reached_stop, stop, tried
    capacity.parquet     one row per (method, rank): capacity, low, high, fitted, ceiling, bits per parameter
    summary.json         constraints, tolerance, the rows above with their fits, the sentences
    capacity.html / .md  the same in words, tables and figures (capacity.png, fit.png, pareto.png)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from knowpack.runfolder import StageFolder, read_parquet

if TYPE_CHECKING:
    import pandas as pd

POINTS_FILE, SEARCHES_FILE, CAPACITY_FILE = "points.parquet", "searches.parquet", "capacity.parquet"
SUMMARY_FILE, HTML_FILE, MARKDOWN_FILE = "summary.json", "capacity.html", "capacity.md"

# rank 0: full fine-tuning, which has none
POINTS_SCHEMA = pa.schema([
    ("method", pa.string()), ("rank", pa.int64()), ("seed", pa.int64()), ("unknown", pa.int64()),
    ("run_id", pa.string()), ("reliability", pa.float64()), ("negative_shift", pa.float64()),
    ("benchmark_drop", pa.float64()), ("trainable_parameters", pa.int64()), ("exposures", pa.float64()),
    ("passed", pa.bool_()), ("fitted_reliability", pa.float64()), ("residual_reliability", pa.float64()),
    ("fitted_negative_shift", pa.float64()), ("residual_negative_shift", pa.float64()),
])
SEARCHES_SCHEMA = pa.schema([  # broke −1: nothing broke up to stop (reached_stop)
    ("method", pa.string()), ("rank", pa.int64()), ("seed", pa.int64()), ("held", pa.int64()),
    ("broke", pa.int64()), ("reached_stop", pa.bool_()), ("stop", pa.int64()), ("tried", pa.list_(pa.int64())),
])
CAPACITY_SCHEMA = pa.schema([  # fitted: null unless fitted_kind is "size"
    ("method", pa.string()), ("rank", pa.int64()), ("seeds", pa.int64()), ("capacity", pa.float64()),
    ("low", pa.int64()), ("high", pa.int64()), ("at_least", pa.bool_()), ("fitted", pa.float64()),
    ("fitted_kind", pa.string()), ("fitted_beyond_runs", pa.bool_()), ("trainable_parameters", pa.int64()),
    ("reference", pa.float64()), ("bits_per_parameter", pa.float64()), ("exposures", pa.float64()),
])


class Capacity(StageFolder):
    stage = "capacity"
    command = "capacity"
    what = "capacity folder"

    def summary(self) -> dict[str, Any]:
        return json.loads(self.file(SUMMARY_FILE).read_text())

    def points(self) -> pd.DataFrame:
        return read_parquet(self.file(POINTS_FILE), POINTS_SCHEMA).to_pandas()

    def searches(self) -> pd.DataFrame:
        return read_parquet(self.file(SEARCHES_FILE), SEARCHES_SCHEMA).to_pandas()

    def capacity(self) -> pd.DataFrame:
        return read_parquet(self.file(CAPACITY_FILE), CAPACITY_SCHEMA).to_pandas()

    @property
    def sweep_path(self) -> Path:
        from knowpack.capacity.driver import SWEEP_DIR

        return self.path / SWEEP_DIR
