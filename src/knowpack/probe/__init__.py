"""The label stage (``stage.py``): few-shot prompts, generation backends (``backends/``: the prefix-sharing engine
and plain ``generate``), a resumable response store and SliCK knowledge categories (``folder.py``)."""
