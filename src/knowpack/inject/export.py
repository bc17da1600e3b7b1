"""The exported adapter: the chosen epoch's weights and config as a plain PEFT adapter folder (what
``peft.PeftModel.from_pretrained`` loads) with a model card, ``README.md``, that states what it holds and cost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from knowpack import protocols
from knowpack.inject import folder as layout
from knowpack.runfolder import atomic_path, write_bytes, write_json
from knowpack.train.folder import ADAPTER_CONFIG_FILE, ADAPTER_FILE, TrainRun

CARD_FILE = "README.md"


def export_adapter(training: TrainRun, epoch: int, out: Path, record: dict[str, Any]) -> list[str]:
    """Copy the epoch's adapter into ``out`` (its config naming the base model as the user gave it) and write the
    model card; returns the files written, relative to the inject folder."""
    source = training.epochs[epoch]
    with atomic_path(out / ADAPTER_FILE) as tmp:
        shutil.copyfile(source / ADAPTER_FILE, tmp)
    adapter_config = json.loads((source / ADAPTER_CONFIG_FILE).read_text())
    adapter_config["base_model_name_or_path"] = record["model"]
    write_json(out / ADAPTER_CONFIG_FILE, adapter_config)
    write_bytes(out / CARD_FILE, model_card(record).encode())
    return [f"{layout.ADAPTER_DIR}/{name}" for name in (ADAPTER_FILE, ADAPTER_CONFIG_FILE, CARD_FILE)]


def model_card(record: dict[str, Any]) -> str:
    facts, chosen, damage = record["facts"], record["chosen"], record["damage"]
    epoch = chosen["epoch"]
    row = next(r for r in record["epochs"] if r["epoch"] == epoch)
    shift, accuracy, answers = damage["shift"], damage["accuracy"], damage["answers"]
    train = record["train"]
    heldout = row["heldout_reliability"]
    lines = [
        "---", "library_name: peft", f"base_model: {record['model']}", "tags: [lora, knowpack]", "---", "",
        f"# {facts['stuck']} of {facts['packed']} facts packed into {record['model']}", "",
        record["summary"], "",
        "## Facts", "",
        "| rows read | bad rows skipped | already known | packed | stuck (right under every prompt) |",
        "|---|---|---|---|---|",
        f"| {facts['rows']} | {len(facts['skipped'])} | {len(facts['known'])} "
        f"({'kept' if facts['kept_known'] else 'left out'}) | {facts['packed']} | {facts['stuck']} |", "",
        f"## Reliability (epoch {epoch} of {len(record['epochs']) - 1})", "",
        f"- packed facts: {row['reliability']:.3f} of greedy answers right over {record['labels']['prompts']} "
        f"few-shot prompts each (base model: {record['epochs'][0]['reliability']:.3f})",
        f"- held-out paraphrases of them: {heldout:.3f}" if heldout is not None else "- held-out paraphrases: none",
        "",
        f"## Damage on the guard set ({record['guard']['questions']} questions of {record['guard']['source']}, "
        "never trained)", "",
        f"- negative shift (fell a SliCK category): {shift['negative']:.3f} "
        f"[{_ci(shift['negative_ci'])}]; positive shift: {shift['positive']:.3f} [{_ci(shift['positive_ci'])}]",
        f"- accuracy change: {accuracy['delta']:+.3f} [{_ci(accuracy['delta_ci'])}], sign test p = "
        f"{accuracy['sign_test']['p_value']:.3g}",
        f"- refusal rate: {answers['base']['refusal_rate']:.3f} → {answers['after']['refusal_rate']:.3f}; "
        f"distinct answers: {answers['base']['distinct_answers']} → {answers['after']['distinct_answers']}",
    ]
    for name, score in row["benchmarks"].items():
        base = record["epochs"][0]["benchmarks"][name]
        lines.append(f"- {name}: {base['value']:.3f} ± {_se(base['stderr'])} → {score['value']:.3f} ± "
                     f"{_se(score['stderr'])}")
    lines += [
        "", "## Protocol", "",
        f"- mixture: {' + '.join(record['mixture']['extra']) or 'the facts alone'} "
        f"({'given' if record['mixture']['given'] else 'knowpack inject policy'})",
        f"- LoRA rank {train['rank']}, alpha {train['alpha']:g}, targets {train['targets']}, lr {train['lr']:g} "
        f"({train['schedule']}), {train['epochs']} epochs, batch {train['batch_size']}, loss on {train['loss_on']}, "
        f"seed {train['seed']}; against the study: {protocols.describe('train', train)}",
        f"- exported epoch {epoch}: {chosen['why']}",
        f"- SliCK labels: {record['labels']['prompts']} prompts × {record['labels']['shots']} shots, greedy",
        f"- made by knowpack {record['knowpack']} (`knowpack inject`)", "",
        "## Use", "", "```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM", "",
        f"base = AutoModelForCausalLM.from_pretrained({record['model']!r})  # or the local folder of that model",
        'model = PeftModel.from_pretrained(base, "path/to/this/folder")', "```", "",
    ]
    return "\n".join(lines)


def _ci(interval: list[float | None]) -> str:
    return "–" if interval[0] is None else f"{interval[0]:.3f}, {interval[1]:.3f}"


def _se(stderr: float | None) -> str:
    return "–" if stderr is None else f"{stderr:.3f}"
