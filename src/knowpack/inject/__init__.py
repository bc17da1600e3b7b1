"""``knowpack inject`` (``stage.py``): a user's facts labelled against their model, packed into an adapter by the
stages (paraphrase, label, train, evaluate), the damage measured on a guard set, the chosen epoch exported; read
through ``folder.InjectFolder``."""
