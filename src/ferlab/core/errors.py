"""The errors a user can cause, under one base class, in a module that imports nothing.

Every error whose cause is the user's input (a file, row, field, option, limit or
machine) derives from `UserError`, and its message names which one and why. The CLI
turns exactly these into one `error:` line and exit code 2; any other exception is a
bug in ferlab and keeps its traceback. Each class also keeps the built-in base it always
had (ValueError, OSError, ...), so `except ValueError` in a user's code still works.

The classes of a concern are defined in its module (`DataError` in data/core.py,
`RunError` in training/run_folder.py, ...); the ones here are raised by modules on the
light prediction path (an ONNX model, no PyTorch), which must not import the rest.

Depends on nothing.
"""


class UserError(Exception):
    """Base of every error a user can cause; the message names the file, field or limit."""


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be applied; the message names the field."""


class CheckpointError(UserError, ValueError):
    """A model file or reference that cannot be loaded or used as asked."""


class InputError(UserError, ValueError):
    """An argument or option value outside what the function accepts (`--every 0`, a port
    out of range, a device this machine lacks)."""
