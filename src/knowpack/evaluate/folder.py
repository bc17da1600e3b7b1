"""An evaluation folder (``RUN/eval/`` by default): every metric's tables, ``summary.json`` and the label folders
they were computed from, read only through :class:`Evaluation`.

Layout::

    manifest.json                 the stage's manifest (config, inputs, outputs, complete)
    probe_questions.parquet       the packed facts + their held-out paraphrases (questions.parquet schema)
    probe_labels/epoch_NN/        labels of that set: epoch_00 = base model, then every epoch's adapter
    labels/epoch_NN/              labels of ALL questions with the adapters of the shift epochs
    benchmarks/<model>.parquet    harness results of one model (the resume unit)
    <table>.parquet, summary.json the tables every metric declares (docs/metrics.md)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from knowpack.errors import InputError
from knowpack.runfolder import StageFolder, read_parquet

if TYPE_CHECKING:
    import pandas as pd

    from knowpack.probe.folder import LabelFolder

EVAL_DIR = "eval"
SUMMARY_FILE = "summary.json"
PROBE_QUESTIONS_FILE = "probe_questions.parquet"
PROBE_LABELS_DIR = "probe_labels"
LABELS_DIR = "labels"


def epoch_dir(epoch: int) -> str:
    return f"epoch_{epoch:02d}"


class Evaluation(StageFolder):
    stage = "evaluate"
    command = "evaluate"
    what = "evaluation folder"

    @classmethod
    def of(cls, path: str | Path) -> Evaluation:
        """The evaluation of a training run (``RUN/eval``) or the evaluation folder itself."""
        path = Path(path)
        for folder in (path / EVAL_DIR, path):
            if cls.is_one(folder):
                return cls(folder)
        raise InputError(f"{path}: no evaluation found; run `knowpack evaluate {path}` first")

    def summary(self) -> dict[str, Any]:
        return json.loads(self.file(SUMMARY_FILE).read_text())

    def table(self, name: str) -> pd.DataFrame | None:
        """A metric's table, checked against the schema the metric declares; None when the run has none."""
        from knowpack.evaluate.metrics import METRICS

        path = self.file(f"{name}.parquet")
        if not path.is_file():
            return None
        schema = next((m.tables[name] for m in METRICS.values() if name in m.tables), None)
        return read_parquet(path, schema).to_pandas()

    @property
    def run_path(self) -> Path:
        return self.input_path("run")

    @property
    def shift_epochs(self) -> list[int]:
        return list(self.summary()["shift_epochs"])

    def labels(self, epoch: int) -> LabelFolder:
        """The labels of all questions with the adapter of a shift epoch."""
        from knowpack.probe.folder import LabelFolder

        folder = self.file(f"{LABELS_DIR}/{epoch_dir(epoch)}")
        if not folder.is_dir():
            raise InputError(f"{self.path}: no {LABELS_DIR}/{epoch_dir(epoch)}; epoch {epoch} is not a shift epoch "
                             "(see --shift-epochs)")
        return LabelFolder(folder)
