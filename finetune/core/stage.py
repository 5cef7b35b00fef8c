"""What every stage script shares: logging set-up, quiet libraries, one-line errors, progress lines."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

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


PROGRESS_LOGGER = "finetune.progress"  # lines that search and seeds pass on from the experiments they run


def progress(message: str) -> None:
    """A line saying how far a long stage has come (one per training epoch), at INFO on its own logger."""
    logging.getLogger(PROGRESS_LOGGER).info(message)


def progress_line(line: str) -> str | None:
    """What a line of a pipeline run's output says about its progress, or None: a stage starting (DVC's "Running
    stage 'train':") or a progress() line."""
    line = line.strip()
    if line.startswith("Running stage '"):
        return "stage " + line.split("'")[1]
    marker = f" {PROGRESS_LOGGER}: "
    return line.split(marker, 1)[1] if marker in line else None


def readable(values: Mapping[str, Any] | Iterable[Any]) -> str:
    """A mapping or a list as a log line reads it: "train 9,180, validation 1,021", "negation, contrast"; numbers
    with thousands separators, floats to 4 significant digits, nested mappings in brackets."""
    def one(value: Any) -> str:
        if isinstance(value, bool) or value is None:
            return str(value).lower() if value is not None else "none"
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, Mapping):
            return f"({readable(value)})"
        return str(value)

    if isinstance(values, Mapping):
        return ", ".join(f"{key.replace('_', ' ')} {one(value)}" for key, value in values.items())
    return ", ".join(one(value) for value in values)


def run(main: Callable[[], None]) -> None:
    """Run a stage's ``main``: an expected error (bad params, data or model) ends it with one ``error:`` line and
    exit status 1, under which DVC stops; any other exception is a bug and keeps its traceback."""
    try:
        main()
    except UserError as err:
        if show_tracebacks():
            raise
        raise SystemExit(one_line(err)) from None
