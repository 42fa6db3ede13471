"""`python -m reranker_router` = `reranker-router`."""

import sys

from .cli import main

sys.exit(main())
