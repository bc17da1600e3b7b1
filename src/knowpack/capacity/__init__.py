"""The capacity command: how many facts an adapter holds within constraints (``stage.py``)."""
