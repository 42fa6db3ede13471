"""`reranker-router` whose DNS discovery reads a file: the loopback test's stand-in for a headless Service.

Usage: `python zero_router.py ENDPOINTS_FILE serve --config ...`. The file holds one server URL per line: the
pods the test's kubelet stand-in has started and seen ready, as the cluster DNS would list them. Everything
else (discovery loop, hold, scaler, HTTP) is the real router.
"""

from __future__ import annotations

import sys
from pathlib import Path

from reranker_router import cli, replicas


def main() -> int:
    """Feed discovery from the file named first, then run the router's command line with the rest."""
    endpoints = Path(sys.argv[1])

    async def resolve(name: str, port: int) -> list[str]:
        text = endpoints.read_text() if endpoints.exists() else ""
        return sorted(line.strip() for line in text.splitlines() if line.strip())

    replicas.resolve = resolve
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
