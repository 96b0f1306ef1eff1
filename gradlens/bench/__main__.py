"""``python -m gradlens.bench``: print the overhead tables (exit status 1 when a target was missed)."""

import sys

from gradlens.bench.cli import main

sys.exit(main())
