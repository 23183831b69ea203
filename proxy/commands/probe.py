"""`metrics-proxy health` and `metrics-proxy ready`: call the backstage endpoints, exit 0 or 1.

For container probes (exec) where no curl is installed; standard library only, so it starts fast.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

PATHS = {"health": "/internal-backstage/health", "ready": "/internal-backstage/ready"}
EXPECTED = {"health": "OK", "ready": "READY"}


def base_url(host: str, port: int) -> str:
    # A proxy listening on every address is reached on loopback from inside its container.
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def probe(check: str, url: str, timeout: float) -> int:
    target = url.rstrip("/") + PATHS[check]
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (OSError, ValueError) as exc:
        print(f"metrics-proxy {check}: {target} unreachable: {exc}", file=sys.stderr)
        return 1
    text = raw.decode(errors="replace").strip()
    try:
        answer = json.loads(text).get("status")
    except (ValueError, AttributeError):
        answer = None
    ok = status == 200 and answer == EXPECTED[check]
    print(f"metrics-proxy {check}: {status} {text}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
