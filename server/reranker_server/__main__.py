"""`python -m reranker_server` = `reranker-server` (also the form the CPU re-exec uses)."""

import sys

from .cli import main

sys.exit(main())
