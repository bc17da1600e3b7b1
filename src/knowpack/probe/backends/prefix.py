"""``prefix``: knowpack's engine, each few-shot prefix computed once and shared by the batch (the default)."""

from knowpack.probe.backends import Backend, register


def make(model, tokenizer, decoding, batch_size: int, router=None):
    from knowpack.probe.engine import PrefixEngine

    return PrefixEngine(model, tokenizer, decoding, batch_size=batch_size, router=router)


register(Backend("prefix", "shared-prefix engine: each few-shot prefix computed once per batch", make))
