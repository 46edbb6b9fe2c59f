"""`python -m memcg`: the same as the `memcg` command."""

import sys

from .cli import main

sys.exit(main())
