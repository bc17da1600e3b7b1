"""The questions stage (``stage.py``): fact sources (``sources/``) → a question set folder (``folder.py``)."""
