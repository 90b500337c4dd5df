"""Entry point the pulumi CLI runs for this project (see Pulumi.yaml)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from residency.stacks.program import main  # noqa: E402

main()
