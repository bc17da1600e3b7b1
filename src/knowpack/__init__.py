"""knowpack: how many new facts can a LoRA adapter absorb, and what does it break?"""

__version__ = "0.1.0"
