"""What a capacity search found: each run's outcome, each search's capacity, the fits, the ceiling, the words.

A run meets the constraints when, after its last epoch, its reliability on the packed facts (lenient) is at least
``--reliability``, its negative shift (share of all questions that fell a SliCK category, lenient) at most
``--max-negative-shift`` and, with ``--max-benchmark-drop``, no benchmark lost more than that against the base
model. The figures are read by name from the evaluation (``evaluate.metrics``), as ``compare`` reads them.

The capacity of a method and rank is the median over seeds of each seed's search result (the largest size that
met every constraint), with the range over seeds as its interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from knowpack.capacity import ceiling
from knowpack.capacity.fit import Fit, fit_logistic, largest_size_within
from knowpack.capacity.folder import (CAPACITY_FILE, CAPACITY_SCHEMA, HTML_FILE, MARKDOWN_FILE, POINTS_FILE,
                                      POINTS_SCHEMA, SEARCHES_FILE, SEARCHES_SCHEMA, SUMMARY_FILE, Capacity)
from knowpack.runfolder import write_bytes, write_json, write_parquet

FITTED = ("reliability", "negative_shift")  # the shares fitted against n (benchmark drops are checked per run)


@dataclass(frozen=True)
class Constraint:
    key: str  # the point's figure: reliability, negative_shift, benchmark_drop
    bound: float
    at_least: bool

    def holds(self, value: float | None) -> bool:
        return value is not None and (value >= self.bound if self.at_least else value <= self.bound)

    @property
    def words(self) -> str:
        if self.key == "reliability":
            return f"≥ {self.bound:.2f} reliability"
        return f"≤ {self.bound:.0%} {self.key.replace('_', ' ')}"


def constraints(config) -> list[Constraint]:
    found = [Constraint("reliability", config.reliability, True),
             Constraint("negative_shift", config.max_negative_shift, False)]
    if config.max_benchmark_drop is not None:
        found.append(Constraint("benchmark_drop", config.max_benchmark_drop, False))
    return found


# ---------------------------------------------------------------- one run


def damage_wanted(config, reliability: float) -> bool:
    """Whether a run's damage is measured: it holds its facts (a run that does not has broken already), or
    ``--damage-of-every-run``."""
    return config.damage_of_every_run or reliability >= config.reliability


def read_point(run_dir: Path, config) -> dict[str, Any] | None:
    """A run's figures and whether they meet every constraint; None while the run is not evaluated."""
    from knowpack.evaluate.folder import EVAL_DIR, Evaluation
    from knowpack.evaluate.metrics import METRICS, all_figures
    from knowpack.runfolder import is_complete
    from knowpack.train.folder import TrainRun

    if not is_complete(run_dir / EVAL_DIR):
        return None
    summary = Evaluation(run_dir / EVAL_DIR).summary()
    figures = {figure.key: figure.value for figure in all_figures(summary)}
    if not summary.get("damage_measured", True) and damage_wanted(config, figures["reliability"]):
        return None  # evaluated under a higher reliability bound: its damage is to be measured now
    benchmarks = [f for f in METRICS["benchmarks"].figures(summary) if not f.key.endswith("_base")
                  ] if summary.get("damage_measured", True) else []
    drops = [figures[f"{f.key}_base"] - f.value for f in benchmarks
             if f.value is not None and figures.get(f"{f.key}_base") is not None]
    run = TrainRun(run_dir, verify=False)
    train_set = run.train_set()
    copies = train_set["question_id"].isin(run.unknown_ids).sum() / len(run.unknown_ids)
    point = {"run_id": run_dir.name, "reliability": figures.get("reliability"),
             "negative_shift": figures.get("negative_shift"), "benchmark_drop": max(drops) if drops else None,
             "trainable_parameters": run.manifest.get("trainable_parameters"),
             "exposures": float(run.config["epochs"] * copies)}
    point["passed"] = all(c.holds(point[c.key]) for c in constraints(config))
    return point


# ---------------------------------------------------------------- the whole search


def write_results(config, folder, sweep, walks: dict, stop: int) -> Capacity:
    """Every output of the capacity folder, then its manifest's ``complete``."""
    from knowpack.capacity.plots import capacity_figure, fit_figure
    from knowpack.kg.folder import read_questions
    from knowpack.report.html import Section, render_html, render_markdown
    from knowpack.report import tradeoff

    points = point_table(config, sweep, walks)
    searches = search_table(walks, stop)
    questions = read_questions(sweep.questions, required=("id", "relation", "answer")).to_pandas()
    bits = float(ceiling.bits_per_fact(questions, sweep.pool["question_id"]).mean())
    rows, fits = capacity_rows(config, points, searches, bits)
    points = with_residuals(points, fits)
    sentences = [sentence(row, config) for row in rows]
    summary = {"constraints": [c.words for c in constraints(config)], "tolerance": config.tolerance,
               "start": config.start, "stop": stop, "facts_available": sweep.pool_size, "bits_per_fact": bits,
               "ceiling": {"bits_per_parameter": ceiling.BITS_PER_PARAMETER, "source": ceiling.SOURCE},
               "capacity": rows, "fit_model": "y = 1 / (1 + exp(-(a + b ln n))), least squares",
               "sentences": sentences}
    capacity_table = pd.DataFrame(rows).drop(columns=["fits"])
    write_parquet(folder.file(POINTS_FILE), points, POINTS_SCHEMA)
    write_parquet(folder.file(SEARCHES_FILE), searches, SEARCHES_SCHEMA)
    write_parquet(folder.file(CAPACITY_FILE), capacity_table, CAPACITY_SCHEMA)
    write_json(folder.file(SUMMARY_FILE), summary)

    sections = [
        Section("Capacity", " ".join(sentences), capacity_figure(capacity_table, folder.file("capacity.png")),
                (("Capacity per method and rank (median over seeds, min–max)", shown(capacity_table)),)),
        Section("Reliability and negative shift against the number of facts",
                f"Every run (dots) and the fitted curve {summary['fit_model']} per method and rank; below, the "
                "residuals (observed − fitted). Dashed: the constraints.",
                fit_figure(points, fits, constraints(config), folder.file("fit.png")),
                (("Fits", fit_table(rows)),)),
        Section(tradeoff.TITLE, tradeoff.TEXT, tradeoff.pareto_figure(points, folder.file("pareto.png"))),
        Section("Runs", "Every run the searches looked at.", tables=(("Runs", runs_shown(points)),)),
    ]
    title = f"knowpack capacity: {config.model}"
    meta = (f"{len(points)} runs in {sweep.out} · constraints {', '.join(summary['constraints'])} · tolerance "
            f"{config.tolerance:.0%}")
    text = " ".join(sentences)
    write_bytes(folder.file(HTML_FILE), render_html(title, meta, text, sections).encode())
    write_bytes(folder.file(MARKDOWN_FILE), render_markdown(title, meta, text, sections).encode())
    pictures = [s.figure.name for s in sections if s.figure is not None]
    folder.finish([POINTS_FILE, SEARCHES_FILE, CAPACITY_FILE, SUMMARY_FILE, HTML_FILE, MARKDOWN_FILE, *pictures])
    return Capacity(folder.path)


def point_table(config, sweep, walks: dict) -> pd.DataFrame:
    rows = []
    for search, state in sorted(walks.items()):
        for size in sorted(set(state.tried)):
            point = read_point(sweep.run_dir(search, size), config)
            if point is not None:
                rows.append({"method": search.method, "rank": search.rank, "seed": search.seed, "unknown": size,
                             **point})
    measured = [name for name in POINTS_SCHEMA.names if not name.startswith(("fitted_", "residual_"))]
    return pd.DataFrame(rows, columns=measured)


def search_table(walks: dict, stop: int) -> pd.DataFrame:
    return pd.DataFrame([{"method": s.method, "rank": s.rank, "seed": s.seed, "held": w.held,
                          "broke": w.broke if w.broke is not None else -1, "reached_stop": w.broke is None,
                          "stop": stop, "tried": list(w.tried)} for s, w in sorted(walks.items())])


def capacity_rows(config, points: pd.DataFrame, searches: pd.DataFrame, bits: float
                  ) -> tuple[list[dict[str, Any]], dict[tuple[str, int], dict[str, Fit]]]:
    """One row per method and rank: the capacity over seeds, the fit, the ceiling."""
    rows, fits = [], {}
    for (method, rank), group in searches.groupby(["method", "rank"], sort=False):
        runs = points[(points["method"] == method) & (points["rank"] == rank)]
        curves = {key: fit_logistic(runs["unknown"], runs[key]) for key in FITTED} if len(runs) else {}
        fits[(method, rank)] = {k: v for k, v in curves.items() if v is not None}
        bounds = [(fits[(method, rank)][c.key], c.bound, c.at_least) for c in constraints(config)
                  if c.key in fits[(method, rank)]]
        fitted = largest_size_within(bounds) if len(bounds) == len(FITTED) else None
        parameters = runs["trainable_parameters"].dropna().max() if len(runs) else np.nan
        capacity = float(np.median(group["held"]))
        rows.append({
            "method": method, "rank": int(rank), "seeds": len(group), "capacity": capacity,
            "low": int(group["held"].min()), "high": int(group["held"].max()),
            "at_least": bool(group["reached_stop"].any()),
            # the fitted capacity: a size, or why there is none (JSON has no infinity)
            "fitted": float(fitted) if fitted is not None and math.isfinite(fitted) else None,
            "fitted_kind": fitted_kind(fitted, len(bounds) == len(FITTED)),
            "fitted_beyond_runs": bool(fitted is not None and len(runs) > 0 and fitted > runs["unknown"].max()),
            "trainable_parameters": None if np.isnan(parameters) else int(parameters),
            "reference": None if np.isnan(parameters) or bits == 0 else ceiling.reference_facts(parameters, bits),
            "bits_per_parameter": None if np.isnan(parameters) else ceiling.bits_per_parameter(capacity, bits,
                                                                                             parameters),
            "exposures": float(runs["exposures"].max()) if len(runs) else None,
            "fits": {key: {"a": fit.a, "b": fit.b, "rmse": fit.rmse, "points": fit.points}
                     for key, fit in fits[(method, rank)].items()},
        })
    return rows, fits


def fitted_kind(fitted: float | None, curves: bool) -> str:
    if not curves:
        return "no fit"  # fewer than two sizes
    if fitted is None:
        return "none"  # no size meets every fitted constraint
    return "unbounded" if math.isinf(fitted) else "size"


def with_residuals(points: pd.DataFrame, fits: dict) -> pd.DataFrame:
    """The points with each fitted value and residual (observed − fitted), NaN where no curve was fitted."""
    points = points.copy()
    for key in FITTED:
        fitted = [fits.get((m, r), {}).get(key) for m, r in zip(points["method"], points["rank"])]
        points[f"fitted_{key}"] = [f.predict([n])[0] if f is not None else np.nan
                                   for f, n in zip(fitted, points["unknown"])]
        points[f"residual_{key}"] = points[key] - points[f"fitted_{key}"]
    return points


# ---------------------------------------------------------------- words and tables


def who(method: str, rank: int) -> str:
    return "full fine-tuning" if method == "full" else f"{method} rank {rank}"


def sentence(row: dict[str, Any], config) -> str:
    """'lora rank 4 holds 480 (430–520) facts at ≥ 0.90 reliability with ≤ 2% negative shift …'"""
    bounds = [c.words for c in constraints(config)]
    within = f"at {bounds[0]} with {' and '.join(bounds[1:])}"
    count = f"{row['capacity']:g}" + (f" ({row['low']}–{row['high']} over {row['seeds']} seeds)"
                                      if row["seeds"] > 1 else "")
    if row["at_least"]:
        head = (f"{who(row['method'], row['rank'])} holds at least {count} facts {within} (the largest size tried; "
                "raise --max-facts to look further)")
    elif row["capacity"] == 0:
        head = f"{who(row['method'], row['rank'])} holds no fact {within}: a single fact already breaks a constraint"
    else:
        head = (f"{who(row['method'], row['rank'])} holds {count} facts {within} (search tolerance "
                f"{config.tolerance:.0%})")
    parts = [head]
    if row["fitted_kind"] == "size":
        where = "beyond the sizes run" if row["fitted_beyond_runs"] else "within the sizes run"
        parts.append(f"the fit puts it at {math.floor(row['fitted']):,} facts ({where})")
    elif row["fitted_kind"] == "unbounded":
        parts.append("the fitted curves set it no limit")
    elif row["fitted_kind"] == "none":
        parts.append("the fitted curves meet the constraints at no size")
    if row["bits_per_parameter"] is not None and row["reference"] is not None:
        parts.append(f"that is {row['bits_per_parameter']:.2g} bits per trainable parameter "
                     f"({row['trainable_parameters']:,}) against a ceiling of ~{ceiling.BITS_PER_PARAMETER:g} "
                     f"({row['reference']:,.0f} facts), each fact seen {row['exposures']:g} "
                     f"time{'s' if row['exposures'] != 1 else ''}")
    return "; ".join(parts) + "."


def number(value, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}" if digits or abs(value) >= 1 or value == 0 else f"{value:.2g}"


def rank_text(method: str, rank: int) -> str:
    return "–" if method == "full" else str(rank)


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """The capacity table as the report shows it."""
    return pd.DataFrame([{
        "method": row.method, "rank": rank_text(row.method, row.rank),
        "capacity": ("≥ " if row.at_least else "") + number(row.capacity), "min": row.low, "max": row.high,
        "fitted": number(row.fitted) if row.fitted_kind == "size" else row.fitted_kind,
        "trainable parameters": number(row.trainable_parameters), "ceiling (facts)": number(row.reference),
        "bits / parameter": number(row.bits_per_parameter, 3), "exposures": number(row.exposures),
    } for row in table.itertuples()])


def runs_shown(points: pd.DataFrame) -> pd.DataFrame:
    """Every run with its figures and the fit's residuals, rounded."""
    if points.empty:
        return points
    out = pd.DataFrame({"method": points["method"], "rank": [rank_text(m, r) for m, r in
                                                                 zip(points["method"], points["rank"])],
                        "seed": points["seed"], "facts": points["unknown"], "run": points["run_id"]})
    for key in ("reliability", "negative_shift", "benchmark_drop", "residual_reliability",
                "residual_negative_shift"):
        if key in points:
            out[key.replace("_", " ")] = [number(v, 3) for v in points[key]]
    out["meets all"] = ["yes" if passed else "no" for passed in points["passed"]]
    return out


def fit_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{"method": row["method"], "rank": row["rank"] if row["method"] != "full" else "–",
                          "figure": key, "a": f"{fit['a']:.3f}", "b": f"{fit['b']:.3f}", "rmse": f"{fit['rmse']:.3f}",
                          "runs": fit["points"]} for row in rows for key, fit in row["fits"].items()])
