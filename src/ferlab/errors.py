"""The error types a user can cause, in a module that imports nothing.

They live here so that the light prediction path (an ONNX model, no PyTorch) can
raise them without importing the modules that define the rest of their concern;
`config` and `checkpoint` re-export them under their usual names.

Depends on nothing.
"""


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message names the field."""


class CheckpointError(ValueError):
    """A model file or reference that cannot be loaded or used as asked."""
