"""The Hugging Face hub: fail fast, with a clear message, when it cannot be reached."""

from __future__ import annotations

import os
import socket

from finetune.core.errors import UserError

HUB_HOST = "huggingface.co"
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


class HubUnreachableError(UserError, RuntimeError):
    """A hub dataset or model was asked for while the hub cannot be reached."""


def hub_offline_reason(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be used right now, or None when it answers."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}:
            return f"{name} is set"
    try:
        # A short TCP connect answers in seconds where a library would wait on retries.
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return None
    except OSError as err:
        return f"{HUB_HOST} is unreachable ({err.__class__.__name__}: {err})"


def require_hub(kind: str, name: str, param: str, local_hint: str) -> None:
    """Raise before any download starts if ``name`` would need the unreachable hub."""
    reason = hub_offline_reason()
    if reason is not None:
        raise HubUnreachableError(
            f"{param}: {name!r} is a Hugging Face hub {kind} id, but the hub cannot be used: {reason}. "
            f"{local_hint}"
        )
