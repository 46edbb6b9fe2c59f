"""`python -m memcg`: the same as the `memcg` command."""

import sys

from memcg.cli import main

sys.exit(main())
