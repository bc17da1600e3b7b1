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

from knowpack.runfolder import StageFolder, read_parquet

if TYPE_CHECKING:
    import pandas as pd

POINTS_FILE, SEARCHES_FILE, CAPACITY_FILE = "points.parquet", "searches.parquet", "capacity.parquet"
SUMMARY_FILE, HTML_FILE, MARKDOWN_FILE = "summary.json", "capacity.html", "capacity.md"


class Capacity(StageFolder):
    stage = "capacity"
    command = "capacity"
    what = "capacity folder"

    def summary(self) -> dict[str, Any]:
        return json.loads(self.file(SUMMARY_FILE).read_text())

    def points(self) -> pd.DataFrame:
        return read_parquet(self.file(POINTS_FILE)).to_pandas()

    def searches(self) -> pd.DataFrame:
        return read_parquet(self.file(SEARCHES_FILE)).to_pandas()

    def capacity(self) -> pd.DataFrame:
        return read_parquet(self.file(CAPACITY_FILE)).to_pandas()

    @property
    def sweep_path(self) -> Path:
        from knowpack.capacity.driver import SWEEP_DIR

        return self.path / SWEEP_DIR
