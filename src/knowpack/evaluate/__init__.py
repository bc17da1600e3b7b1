"""Measuring what packing costs: reliability, knowledge shift, refusals, answer collapse, spill-over reasons and
external benchmarks (docs/metrics.md defines every number)."""

from knowpack.evaluate.stage import EvaluateConfig, compare, evaluate, evaluate_loaded

__all__ = ["EvaluateConfig", "compare", "evaluate", "evaluate_loaded"]
