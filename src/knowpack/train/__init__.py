"""The train stage (``stage.py``): seeded fact mixtures (``mixture.py``), row packing (``packing.py``) and the LoRA
training loop (``loop.py``), many runs per loaded base model; runs are read through ``folder.TrainRun``."""
