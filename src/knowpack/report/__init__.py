"""The report (``stage.py``): the study's figures and tables for a sweep or one run, drawn by each metric (``evaluate/metrics``) with the shared helpers here."""
