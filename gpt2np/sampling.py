"""Sampling and generation (placeholder: the generation issue writes this module)."""


def generate(*args, **kwargs):
    raise NotImplementedError("gpt2np.generate is not written yet")
