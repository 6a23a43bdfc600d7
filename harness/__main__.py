"""``python -m harness``: the ``harness`` command without its console script."""

import sys

from harness.orchestration.cli import main

sys.exit(main())
