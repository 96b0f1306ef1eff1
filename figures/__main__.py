"""``python -m figures``: the repository's figures command (what ``gradlens figures`` runs in a checkout)."""

import sys

from figures.cli import main

sys.exit(main())
