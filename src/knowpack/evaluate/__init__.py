"""The evaluate stage (``stage.py``): what packing costs, measured by the metrics registered in ``metrics/``
(reliability, knowledge shift, refusals, answer collapse, spill-over reasons, external benchmarks); evaluations are
read through ``folder.Evaluation``. docs/metrics.md defines every number."""
