"""Packing runs: seeded fact mixtures and LoRA training, many runs per loaded base model (docs/architecture.md)."""

from knowpack.train.lora import TrainConfig, train, train_loaded

__all__ = ["TrainConfig", "train", "train_loaded"]
