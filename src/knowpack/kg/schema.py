"""The ``questions.parquet`` schema: the contract between the kg stage and every later stage
(docs/architecture.md)."""

from __future__ import annotations

import pyarrow as pa

QUESTIONS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("subject", pa.string(), nullable=False),
        pa.field("relation", pa.string(), nullable=False),
        pa.field("object", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("aliases", pa.list_(pa.string()), nullable=False),
        pa.field("bucket", pa.string(), nullable=False),
        pa.field("popularity", pa.int64(), nullable=False),
        pa.field("relation_domain", pa.string(), nullable=False),
        pa.field("template_id", pa.string(), nullable=False),
        pa.field("paraphrases", pa.list_(pa.string()), nullable=False),
    ]
)

BUCKETS = ("head", "torso", "tail")
