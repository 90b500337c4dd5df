"""``python -m bench [--quick|--tiny] [--only copy,verify,memory,fence,plan]``: see bench/harness.py."""

import sys

from .harness import main

sys.exit(main())
