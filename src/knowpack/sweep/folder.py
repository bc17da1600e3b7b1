"""A sweep folder: ``sweep.parquet`` (one row per run: id, grid values, status, paths relative to the folder),
``sweep.yaml`` (the sweep as run), ``data/`` (questions and labels it made) and ``runs/<run_id>/`` (a training run
with its ``eval/``), read through :class:`Sweep`. Paths inside are relative, so a sweep folder can be moved or
copied to another machine and still be evaluated and reported."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from knowpack.runfolder import StageFolder, read_parquet

if TYPE_CHECKING:
    import pandas as pd

INDEX_FILE = "sweep.parquet"
SWEEP_FILE = "sweep.yaml"
RUNS_DIR = "runs"


class Sweep(StageFolder):
    stage = "sweep"
    command = "sweep"
    what = "sweep folder"

    def index(self) -> pd.DataFrame:
        """One row per run with ``run_dir`` made absolute (wherever the folder is now)."""
        return read_index(self.path)


def read_index(path: Path) -> pd.DataFrame:
    """The run index of a sweep folder, finished or not (a report may show a sweep still running)."""
    from knowpack.errors import InputError

    index = read_parquet(Path(path) / INDEX_FILE).to_pandas()
    for column in ("run_id", "unknown", "mixture", "run_dir", "status"):
        if column not in index:
            raise InputError(f"{Path(path) / INDEX_FILE}: missing column {column}")
    index["run_dir"] = [str((Path(path) / d).resolve()) for d in index["run_dir"]]
    return index
