"""Read a sweep folder (or one training run folder) into the tidy tables the metrics draw their report from.

Each evaluated run contributes, through every metric's ``collect``, rows tagged with the run's grid values
(``unknown``, ``mixture``, ``method``, ``rank``, ``seed``), so every figure can group by size and mixture and spread
over seeds. Only complete evaluations are read; runs that are not finished are listed in the report, not plotted.

When the runs differ in method or rank, a figure's line stands for a *condition*: the mixture together with the
method and rank (``none@method=dora|rank=4``, shown as "no extra, dora rank 4"). The tidy frames then carry that
key in their ``mixture`` column, so every metric's figures and tables split by it without knowing about methods;
``runs`` keeps the plain mixture and the ``condition`` beside it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from knowpack.errors import InputError
from knowpack.evaluate.folder import EVAL_DIR, Evaluation
from knowpack.evaluate.metrics import in_order
from knowpack.runfolder import is_complete, read_manifest
from knowpack.sweep.folder import INDEX_FILE, SWEEP_FILE, read_index
from knowpack.sweep.spec import canonical_mixture
from knowpack.train.folder import TrainRun, method_of

TAGS = ["run_id", "unknown", "mixture", "method", "rank", "seed"]
SETTINGS = ("method", "rank")  # training settings a report tells apart when its runs differ in them


@dataclass
class ReportData:
    """Tidy tables over all evaluated runs (``frames``, by name, each tagged with TAGS); ``runs`` has one row
    per run (evaluated or not)."""

    source: Path
    kind: str  # "sweep" or "run"
    runs: pd.DataFrame
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def mixtures(self) -> list[str]:
        """What the figures' lines stand for, in the order the sweep lists them: mixtures, or conditions when the
        runs differ in method or rank (see the module docstring)."""
        return list(dict.fromkeys(self.runs["condition"]))

    @property
    def evaluated(self) -> pd.DataFrame:
        return self.runs[self.runs["evaluated"]]

    def frame(self, name: str) -> pd.DataFrame:
        """A tidy table by name; empty when no evaluated run has it."""
        return self.frames.get(name, pd.DataFrame())


def collect(source: Path) -> ReportData:
    source = Path(source)
    if (source / INDEX_FILE).is_file():
        runs, kind = _sweep_runs(source), "sweep"
    elif TrainRun.is_one(source):
        runs, kind = _single_run(source), "run"
    else:
        raise InputError(f"{source}: neither a sweep folder (no {INDEX_FILE}) nor a training run folder")
    runs["evaluated"] = [is_complete(Path(d) / EVAL_DIR) for d in runs["run_dir"]]
    runs["protocol"] = [_protocol(Path(d)) for d in runs["run_dir"]]
    varying = [name for name in SETTINGS if runs[name].nunique() > 1]
    runs["condition"] = [condition_key(row, varying) for row in runs.to_dict("records")]
    data = ReportData(source=source, kind=kind, runs=runs)
    parts: dict[str, list[pd.DataFrame]] = {}
    for row in runs[runs["evaluated"]].itertuples():
        evaluation = Evaluation(Path(row.run_dir) / EVAL_DIR)
        for metric in in_order():
            for name, frame in metric.collect(evaluation).items():
                if frame is not None and len(frame):
                    parts.setdefault(name, []).append(frame.assign(run_id=row.run_id))
    tags = runs.loc[runs["evaluated"], TAGS].assign(mixture=runs["condition"])
    data.frames = {name: tags.merge(pd.concat(frames, ignore_index=True), on="run_id", how="inner")
                   for name, frames in parts.items()}
    return data


def condition_key(run: dict, varying: list[str]) -> str:
    """The run's mixture, with the settings that vary between the report's runs (``none@method=dora|rank=4``)."""
    if not varying:
        return run["mixture"]
    return run["mixture"] + "@" + "|".join(f"{name}={run[name]}" for name in varying)


def _sweep_runs(sweep_dir: Path) -> pd.DataFrame:
    """The index, with the settings the grid does not vary taken from the sweep's fixed training options (or the
    train stage's defaults)."""
    import yaml

    from knowpack.train.stage import TrainConfig

    index = read_index(sweep_dir)
    if "seed" not in index:
        index["seed"] = 0
    described = sweep_dir / SWEEP_FILE
    fixed = (yaml.safe_load(described.read_text()).get("train") or {}) if described.is_file() else {}
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name in SETTINGS:
        if name not in index:
            index[name] = fixed.get(name, defaults[name])
    return index


def _single_run(run_dir: Path) -> pd.DataFrame:
    config = read_manifest(run_dir).get("config", {})
    return pd.DataFrame(
        [{
            "run_id": run_dir.name,
            "unknown": int(config.get("unknown", 0)),
            "mixture": canonical_mixture(list(config.get("extra", []))),
            "method": method_of(config),
            "rank": int(config.get("rank", 1)),
            "seed": int(config.get("seed", 0)),
            "status": "done" if is_complete(run_dir / EVAL_DIR) else "trained",
            "run_dir": str(run_dir.resolve()),
        }]
    )


def _protocol(run_dir: Path) -> str:
    """How the run's training (and its base labels') settings relate to the protocols, e.g. 'study' or
    'study except rank=8'; empty for a run not started."""
    from knowpack import protocols
    from knowpack.errors import KnowpackError

    try:
        manifest = read_manifest(run_dir)
        labels = TrainRun(run_dir, verify=False).labels().settings if manifest.get("complete") else {}
    except KnowpackError:
        return ""
    train = protocols.describe("train", manifest.get("config", {}))
    label = protocols.describe("label", labels) if labels else None
    return train if label in (None, train) else f"labels: {label}; training: {train}"


# ---------------------------------------------------------------- helpers for the metrics' collect


def where(frame: pd.DataFrame, **equal) -> pd.DataFrame:
    """Rows matching every ``column=value`` for the columns the table has (lenient matching, overall, all)."""
    for column, value in equal.items():
        if column in frame:
            frame = frame[frame[column] == value]
    return frame


def last_epoch(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["epoch"] == frame["epoch"].max()] if "epoch" in frame and len(frame) else frame
