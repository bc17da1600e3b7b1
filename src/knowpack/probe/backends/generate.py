"""``generate``: plain ``model.generate`` on each full prompt — the reference the engine is tested against."""

from knowpack.probe.backends import Backend, register


def make(model, tokenizer, decoding, batch_size: int, router=None):
    from knowpack.probe.reference import GenerateEngine

    return GenerateEngine(model, tokenizer, decoding, batch_size=batch_size, router=router)


register(Backend("generate", "plain model.generate per prompt (the reference; slow)", make))
