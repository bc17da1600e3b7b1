"""Knowledge probing: few-shot prompts, a prefix-sharing generation engine, a resumable response store and
SliCK knowledge categories (``label`` / ``label_loaded``)."""

from knowpack.probe.label import LabelConfig, LabelTarget, label, label_loaded
from knowpack.probe.prompts import training_example

__all__ = ["LabelConfig", "LabelTarget", "label", "label_loaded", "training_example"]
