"""An inject folder: the stage folders it is made of, its own data tables, the exported adapter and the report,
read only through :class:`InjectFolder`.

Layout::

    manifest.json                  the inject run's manifest (config, inputs, model; outputs and complete last)
    data/facts.parquet             the facts as checked, with template paraphrases (questions.parquet schema)
    data/labelled.parquet          those facts + the guard questions: the set the base model labels
    data/known.parquet             known-fact candidates for the mixture (same relations, or --known)
    data/pack.parquet              the facts to pack (train --pool)
    data/paraphrase_input.parquet  packed facts that needed model-written paraphrases
    data/questions.parquet         data/labelled.parquet with those paraphrases: what training and evaluation read
    embedded/                      the embedded question set (questions stage): the default guard's source
    labels/, known_labels/         base labels (label stage; answers cached per model in the shared store)
    paraphrases/                   paraphrase stage folder
    run/, run/eval/                the training run and its evaluation (every epoch)
    adapter/                       the exported adapter: adapter_model.safetensors, adapter_config.json, README.md
    inject.json                    what happened: facts, labels, mixture and why, guard, per-epoch figures, choice
    report.html, report.md         the report (first paragraph: how many facts stuck, at which epoch, at what cost)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from knowpack.runfolder import StageFolder

if TYPE_CHECKING:
    from knowpack.evaluate.folder import Evaluation

DATA_DIR = "data"
FACTS_FILE = f"{DATA_DIR}/facts.parquet"
LABELLED_FILE = f"{DATA_DIR}/labelled.parquet"
KNOWN_FILE = f"{DATA_DIR}/known.parquet"
PACK_FILE = f"{DATA_DIR}/pack.parquet"
PARAPHRASE_INPUT_FILE = f"{DATA_DIR}/paraphrase_input.parquet"
QUESTIONS_FILE = f"{DATA_DIR}/questions.parquet"
EMBEDDED_DIR, LABELS_DIR, KNOWN_LABELS_DIR, PARAPHRASES_DIR, RUN_DIR = (
    "embedded", "labels", "known_labels", "paraphrases", "run")
ADAPTER_DIR = "adapter"
SUMMARY_FILE = "inject.json"
HTML_FILE, MARKDOWN_FILE = "report.html", "report.md"


class InjectFolder(StageFolder):
    stage = "inject"
    command = "inject"
    what = "inject folder"

    def summary(self) -> dict[str, Any]:
        return json.loads(self.file(SUMMARY_FILE).read_text())

    @property
    def chosen_epoch(self) -> int:
        return int(self.summary()["chosen"]["epoch"])

    @property
    def adapter(self) -> Path:
        return self.file(ADAPTER_DIR)

    @property
    def html(self) -> Path:
        return self.file(HTML_FILE)

    def evaluation(self) -> Evaluation:
        from knowpack.evaluate.folder import Evaluation

        return Evaluation.of(self.file(RUN_DIR))
