"""The one base class of every error a user can fix (params, data, model, files, hardware).

Stages and the command line print such an error as one ``error:`` line and exit with
status 1; anything else is a bug and keeps its traceback. Set ``FINETUNE_TRACEBACK=1``
to see the traceback of an expected error too.
"""

from __future__ import annotations

import os

TRACEBACK_VARIABLE = "FINETUNE_TRACEBACK"


class UserError(Exception):
    """An expected problem whose message names what is wrong and how to fix it."""


def one_line(err: UserError) -> str:
    """The error as the single line a stage or command prints."""
    return "error: " + " ".join(str(err).split())


def show_tracebacks() -> bool:
    return os.environ.get(TRACEBACK_VARIABLE, "").strip().lower() in {"1", "true", "yes", "on"}
