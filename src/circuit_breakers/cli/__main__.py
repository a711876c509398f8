"""``python -m circuit_breakers.cli ...``: the same as ``cb ...``."""

import sys

from circuit_breakers.cli import main

sys.exit(main())
