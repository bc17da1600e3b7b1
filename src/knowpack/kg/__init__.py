"""The kg stage: facts → ``questions.parquet`` (DBpedia dump builder, embedded fact graph, templates, paraphrases)."""

from knowpack.kg.paraphrase import ParaphraseConfig, paraphrase_questions
from knowpack.kg.questions import QuestionsConfig, build_questions, read_summary
from knowpack.kg.schema import BUCKETS, QUESTIONS_SCHEMA

__all__ = [
    "BUCKETS",
    "QUESTIONS_SCHEMA",
    "ParaphraseConfig",
    "QuestionsConfig",
    "build_questions",
    "paraphrase_questions",
    "read_summary",
]
