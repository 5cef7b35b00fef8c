"""What every stage script shares: logging set-up, quiet libraries, one-line errors."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from finetune.core.errors import UserError, one_line, show_tracebacks


def setup(name: str) -> logging.Logger:
    """Log to stderr and keep libraries from writing caches into other stages' outputs."""
    # Our own lines at INFO; libraries only warn (onnxscript and onnx_ir log every rewrite at INFO).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for ours in ("stages", "finetune"):
        logging.getLogger(ours).setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # a "Loading weights" bar per model load; the Trainer's own bar stays

    # datasets writes cache files beside the data it loaded: that would change DVC outputs.
    datasets.disable_caching()
    datasets.logging.set_verbosity_warning()
    return logging.getLogger(f"stages.{name}")


def run(main: Callable[[], None]) -> None:
    """Run a stage's ``main``: an expected error (bad params, data or model) ends it with one ``error:`` line and
    exit status 1, under which DVC stops; any other exception is a bug and keeps its traceback."""
    try:
        main()
    except UserError as err:
        if show_tracebacks():
            raise
        raise SystemExit(one_line(err)) from None
