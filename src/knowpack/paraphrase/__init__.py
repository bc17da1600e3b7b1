"""The paraphrase stage (``stage.py``): model-written rephrasings added to a question set."""
