"""Sweeps (``stage.py``): a YAML grid of packing runs, run and resumed on an executor; read through ``folder.Sweep``."""
