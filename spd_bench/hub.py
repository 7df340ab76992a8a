"""Whether the model hub can answer: the offline switches, and a short connection probe (asked
once per process), because the hub clients retry an unreachable hub for over half a minute.
A leaf module: model loading and the data layers both ask it."""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "true", "yes", "on"}


def offline_mode() -> bool:
    """HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is set: the hub clients fail at once, as asked."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


@functools.lru_cache(maxsize=None)
def hub_reachable() -> bool:
    """Whether a TCP connection to the hub endpoint opens within a few seconds (asked once per process)."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname or "", port), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True
