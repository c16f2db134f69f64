"""`python -m ferlab`: the command line.

Depends on: cli.
"""

from .cli import app

app(prog_name="ferlab")
