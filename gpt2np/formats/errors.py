"""The one exception type of gpt2np.formats."""


class WeightsError(ValueError):
    """A weight file is malformed, corrupt, or does not match the expected model.

    The message names the file/tensor and says what was expected, in one line,
    so that the CLI can print it as it is.
    """
