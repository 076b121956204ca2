"""Whether the Hugging Face Hub endpoint can be reached at all, asked before a download.

huggingface_hub retries a refused or timed-out connection five times with backoff (some 25 s) before it falls back
to its cache; ``zoo.from_pretrained`` asks first, with one TCP connection to the endpoint (or to the proxy that
``urllib`` would use for it) and a short timeout, and goes to the cache at once when there is no answer.
"""

from __future__ import annotations

import socket
import urllib.request
from urllib.parse import urlsplit

__all__ = ["PROBE_TIMEOUT_S", "unreachable"]

PROBE_TIMEOUT_S = 0.5


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def unreachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why ``endpoint`` (``https://huggingface.co``) cannot be reached, or None when a TCP connection opens."""
    host, port = _address(endpoint)
    proxy = urllib.request.getproxies().get(urlsplit(endpoint).scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        host, port = _address(proxy if "://" in proxy else f"http://{proxy}")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s"
    except OSError as e:
        return f"{host}:{port}: {e.strerror or e}"
