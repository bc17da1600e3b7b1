"""Packing quality on the embedded model: can a LoRA adapter make SmolLM2-135M answer 50 facts it did not know?

Facts are invented (fictional countries, companies, bridges, rivers in study-like relation templates), so the base
model cannot know them; each is kept only if the base model's greedy zero-shot answer misses it. Reliability =
share of the 50 facts whose greedy zero-shot answer (the study's training prompt, knowpack.probe.prompts) contains
the target after training. Runs share one loaded model, as a sweep does.

  python bench/train_quality.py --runs "rank=8,alpha=16" "rank=1,alpha=2"
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from knowpack.models import load_model  # noqa: E402
from knowpack.probe.prompts import training_example  # noqa: E402
from knowpack.runfolder import open_run, write_parquet  # noqa: E402
from knowpack.text import extract_answer, match_lenient  # noqa: E402
from knowpack.train.stage import TrainConfig, run_loaded  # noqa: E402

SYLLABLES = ["zan", "pra", "nel", "kor", "vel", "mir", "dra", "sol", "ten", "bru", "qua", "lis", "ord", "fen", "gar"]
TEMPLATES = [
    ("capital", "What is the capital of {s}?", "Republic of "),
    ("founder", "Who founded the company {s}?", ""),
    ("river", "Which river flows through the city of {s}?", ""),
    ("language", "What is the official language of {s}?", "Kingdom of "),
    ("architect", "Who designed the {s} Bridge?", ""),
]


def invented_facts(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    word = lambda n: "".join(rng.choice(SYLLABLES, n)).capitalize()  # noqa: E731
    facts = []
    for i in range(count):
        relation, question, prefix = TEMPLATES[i % len(TEMPLATES)]
        subject = prefix + word(3)
        answer = word(2) + (" " + word(2) if relation in ("founder", "architect") else "")
        facts.append({"id": f"{relation}/{i}", "relation": relation, "question": question.format(s=subject),
                      "subject": subject, "answer": answer})
    return facts


@torch.no_grad()
def greedy_answers(loaded, questions: list[str], batch: int = 25) -> list[str]:
    tokenizer, answers = loaded.tokenizer, []
    tokenizer.padding_side = "left"
    for start in range(0, len(questions), batch):
        prompts = [training_example(tokenizer, q, "", loaded.chat)[0] for q in questions[start : start + batch]]
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not loaded.chat)
        out = loaded.model.generate(**encoded.to(loaded.device), max_new_tokens=16, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        answers += [extract_answer(t) for t in tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1]:],
                                                                       skip_special_tokens=True)]
    return answers


def write_inputs(root: Path, facts: list[dict]) -> Path:
    questions = root / "questions.parquet"
    n = len(facts)
    write_parquet(questions, pa.table({
        "id": [f["id"] for f in facts], "subject": [f["subject"] for f in facts],
        "relation": [f["relation"] for f in facts], "object": [f["answer"] for f in facts],
        "question": [f["question"] for f in facts], "answer": [f["answer"] for f in facts],
        "aliases": [[f["answer"]] for f in facts], "bucket": ["tail"] * n, "popularity": [0] * n,
        "relation_domain": ["undefined"] * n, "template_id": [f"{f['relation']}#0" for f in facts],
        "paraphrases": [[] for _ in facts],
    }))
    run = open_run(root / "labels", "label", {"note": "invented facts, base model checked zero-shot"},
                   {"questions": questions})
    write_parquet(run.file("labels.parquet"), pa.table({
        "question_id": [f["id"] for f in facts], "category": ["Unknown"] * n, "category_strict": ["Unknown"] * n,
        "p_greedy": [0.0] * n, "p_sample": [0.0] * n, "p_greedy_strict": [0.0] * n, "p_sample_strict": [0.0] * n,
    }))
    run.finish(["labels.parquet"])
    return root / "labels"


def reliability(loaded, run: Path, epoch: int, facts: list[dict]) -> float:
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(loaded.model, run / "epochs" / f"epoch_{epoch:02d}").eval()
    try:
        answers = greedy_answers(loaded, [f["question"] for f in facts])
    finally:
        peft_model.unload()
    return float(np.mean([match_lenient(a, [f["answer"]]) for a, f in zip(answers, facts)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--facts", type=int, default=50)
    parser.add_argument("--runs", nargs="+", default=["rank=8,alpha=16", "rank=1,alpha=2"],
                        help="TrainConfig overrides per run, e.g. rank=8,alpha=16,lr=2e-3")
    parser.add_argument("--epochs-to-score", default="5,10")
    args = parser.parse_args()

    loaded = load_model(args.model, device="cpu")
    pool = invented_facts(args.facts * 2, seed=0)
    base = greedy_answers(loaded, [f["question"] for f in pool])
    facts = [f for f, a in zip(pool, base) if not match_lenient(a, [f["answer"]])][: args.facts]
    print(f"# {args.model}, CPU {torch.get_num_threads()} threads; {len(facts)} invented facts the base model misses")
    with tempfile.TemporaryDirectory() as tmp:
        labels = write_inputs(Path(tmp), facts)
        print("| run | epoch | train loss | reliability | train s |")
        print("|---|---|---|---|---|")
        for index, spec in enumerate(args.runs):
            overrides = {k: type(getattr(TrainConfig, k))(v) for k, v in (item.split("=") for item in spec.split(","))}
            config = TrainConfig(labels=labels, out=Path(tmp) / f"run{index}", unknown=len(facts), **overrides)
            started = time.perf_counter()
            run = run_loaded(loaded, config).path
            seconds = time.perf_counter() - started
            losses = json.loads((run / "manifest.json").read_text())["epoch_loss"]
            for epoch in (int(e) for e in args.epochs_to_score.split(",")):
                print(f"| {spec} | {epoch} | {losses[epoch - 1]:.3f} | {reliability(loaded, run, epoch, facts):.2f} | "
                      f"{seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
