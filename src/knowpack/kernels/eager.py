"""transformers' own code: nothing patched (the study's numerics, and every CPU's)."""

from knowpack.kernels import KERNEL_SETS, KernelSet

# ``auto`` never picks it: it is what ``auto`` falls back to when no fused set serves the model.
KERNEL_SETS.register("eager", KernelSet("transformers' own code (the study's numerics)", lambda config, device: None,
                                        lambda model: None, lambda config: False))
