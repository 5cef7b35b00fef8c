"""What every stage script shares: logging set-up, quiet libraries, small writers."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any


def setup(name: str) -> logging.Logger:
    """Log to stderr and keep libraries from writing caches into other stages' outputs."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets

    # datasets writes cache files beside the data it loaded: that would change DVC outputs.
    datasets.disable_caching()
    datasets.logging.set_verbosity_warning()
    return logging.getLogger(f"stages.{name}")


def write_json(data: Any, path: str | Path) -> None:
    """Pretty, key-sorted JSON with a trailing newline: byte-stable and diff-friendly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
