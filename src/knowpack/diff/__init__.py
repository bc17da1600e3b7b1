"""``knowpack diff``: a paired comparison of two labellings and a regression gate."""
