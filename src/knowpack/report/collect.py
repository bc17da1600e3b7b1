"""Read a sweep folder (or one training run folder) into the tidy tables the figures and tables are drawn from.

Each evaluated run contributes rows tagged with its grid values (``unknown``, ``mixture``, ``seed``), so every
figure can group by size and mixture and spread over seeds. The evaluate stage's tables (docs/metrics.md) are
read only from complete ``eval/`` folders; runs that are not finished are listed in the report, not plotted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from knowpack.errors import InputError
from knowpack.evaluate.benchmarks import headline
from knowpack.evaluate.spillover import REASONS
from knowpack.runfolder import MANIFEST, read_parquet
from knowpack.sweep.spec import canonical_mixture



@dataclass
class ReportData:
    """Tidy tables over all evaluated runs. ``runs`` has one row per run (evaluated or not)."""

    source: Path
    kind: str  # "sweep" or "run"
    runs: pd.DataFrame
    reliability: pd.DataFrame = field(default_factory=pd.DataFrame)  # + epoch, scope, reliability
    shift: pd.DataFrame = field(default_factory=pd.DataFrame)  # + positive, negative, n_questions
    matrix: pd.DataFrame = field(default_factory=pd.DataFrame)  # + before, after, count
    effects: pd.DataFrame = field(default_factory=pd.DataFrame)  # + refusal_rate, distinct_answers, top_share, top_answer
    base_effects: dict = field(default_factory=dict)  # the base model's refusal_rate, distinct_answers, top_share
    spillover: pd.DataFrame = field(default_factory=pd.DataFrame)  # + direction, n_shifted, reasons, explained
    benchmarks: pd.DataFrame = field(default_factory=pd.DataFrame)  # + score, value, stderr
    base_benchmarks: pd.DataFrame = field(default_factory=pd.DataFrame)  # score, value, stderr

    @property
    def mixtures(self) -> list[str]:
        """Mixtures in the order the sweep lists them."""
        return list(dict.fromkeys(self.runs["mixture"]))

    @property
    def evaluated(self) -> pd.DataFrame:
        return self.runs[self.runs["evaluated"]]


def collect(source: Path) -> ReportData:
    source = Path(source)
    if (source / "sweep.parquet").is_file():
        runs, kind = _sweep_runs(source), "sweep"
    elif (source / MANIFEST).is_file() and _manifest(source).get("stage") == "train":
        runs, kind = _single_run(source), "run"
    else:
        raise InputError(f"{source}: neither a sweep folder (no sweep.parquet) nor a training run folder")
    runs["evaluated"] = [bool(_manifest(Path(d) / "eval").get("complete")) for d in runs["run_dir"]]
    data = ReportData(source=source, kind=kind, runs=runs)
    tags = runs.loc[runs["evaluated"], ["run_id", "unknown", "mixture", "seed"]]
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in ("reliability", "shift", "matrix", "effects",
                                                                  "base_effects", "spillover", "benchmarks", "base_benchmarks")}
    for row in runs[runs["evaluated"]].itertuples():
        eval_dir = Path(row.run_dir) / "eval"
        for name, frame in _run_tables(eval_dir).items():
            if frame is not None and len(frame):
                parts[name].append(frame.assign(run_id=row.run_id))
    for name, frames in parts.items():
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"run_id": []})
        if not name.startswith("base_"):
            table = tags.merge(table, on="run_id", how="inner") if len(table) else pd.DataFrame()
        setattr(data, name, table)
    if len(data.base_effects):
        data.base_effects = data.base_effects.drop(columns="run_id").mean(numeric_only=True).to_dict()
    else:
        data.base_effects = {}
    if len(data.base_benchmarks):
        data.base_benchmarks = data.base_benchmarks.groupby("score", as_index=False)[["value", "stderr"]].mean()
    return data


# ---------------------------------------------------------------- runs


def _sweep_runs(sweep_dir: Path) -> pd.DataFrame:
    index = read_parquet(sweep_dir / "sweep.parquet").to_pandas()
    for column in ("run_id", "unknown", "mixture", "run_dir", "status"):
        if column not in index:
            raise InputError(f"{sweep_dir / 'sweep.parquet'}: missing column {column}")
    if "seed" not in index:
        index["seed"] = 0
    index["run_dir"] = [str((sweep_dir / d).resolve()) for d in index["run_dir"]]
    return index


def _single_run(run_dir: Path) -> pd.DataFrame:
    config = _manifest(run_dir).get("config", {})
    return pd.DataFrame(
        [{
            "run_id": run_dir.name,
            "unknown": int(config.get("unknown", 0)),
            "mixture": canonical_mixture(list(config.get("extra", []))),
            "seed": int(config.get("seed", 0)),
            "status": "done" if _manifest(run_dir / "eval").get("complete") else "trained",
            "run_dir": str(run_dir.resolve()),
        }]
    )


def _manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


# ---------------------------------------------------------------- one run's eval tables


def _read(path: Path) -> pd.DataFrame | None:
    return read_parquet(path).to_pandas() if path.is_file() else None


def _where(frame: pd.DataFrame, **equal) -> pd.DataFrame:
    """Rows matching every ``column=value`` for the columns the table has (lenient matching, overall, all)."""
    for column, value in equal.items():
        if column in frame:
            frame = frame[frame[column] == value]
    return frame


def _last_epoch(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["epoch"] == frame["epoch"].max()] if "epoch" in frame and len(frame) else frame


def _run_tables(eval_dir: Path) -> dict[str, pd.DataFrame | None]:
    """One run's rows for each tidy table: the last evaluated epoch after training, epoch 0 as the base model."""
    tables: dict[str, pd.DataFrame | None] = {}

    reliability = _read(eval_dir / "reliability.parquet")
    if reliability is not None:
        tables["reliability"] = reliability.rename(columns={"reliability_lenient": "reliability"})[
            ["epoch", "scope", "reliability"]
        ]

    fractions = _read(eval_dir / "shift_fractions.parquet")
    if fractions is not None:
        overall = _last_epoch(_where(fractions, scope="all", breakdown="overall", match="lenient"))
        tables["shift"] = overall[["positive", "negative", "n_questions"]]
    matrix = _read(eval_dir / "shift.parquet")
    if matrix is not None:
        tables["matrix"] = _last_epoch(_where(matrix, scope="all", breakdown="overall", match="lenient"))[
            ["before", "after", "count"]
        ]

    effects, base = {}, {}
    for name, columns in (("refusals", ("refusal_rate",)), ("collapse", ("distinct_answers", "top_share", "top_answer"))):
        table = _read(eval_dir / f"{name}.parquet")
        if table is not None and len(table):
            before, after = table[table["epoch"] == 0], _last_epoch(table[table["epoch"] > 0])
            for column in columns:
                if len(before) and len(after):
                    base[column], effects[column] = before[column].iloc[0], after[column].iloc[0]
    if effects:
        tables["effects"] = pd.DataFrame([effects])
        tables["base_effects"] = pd.DataFrame([base])

    spill = _read(eval_dir / "spillover_summary.parquet")
    if spill is not None:
        spill = _last_epoch(_where(spill, scope="not_trained"))
        spill = spill[spill["transition"].isin(["positive", "negative"])]
        tables["spillover"] = spill.rename(columns={"transition": "direction"})[
            ["direction", "n_shifted", *REASONS, "explained"]
        ]

    bench = _read(eval_dir / "benchmarks.parquet")
    if bench is not None and len(bench):
        bench = headline(bench)
        bench["score"] = bench["benchmark"] + " " + bench["metric"]
        is_base = bench["model"] == "base"
        adapters = bench[~is_base]
        tables["benchmarks"] = adapters[adapters["model"] == adapters["model"].max()][["score", "value", "stderr"]]
        tables["base_benchmarks"] = bench[is_base][["score", "value", "stderr"]]
    return tables
