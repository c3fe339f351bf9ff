"""``python -m clrfast``: the same command line as the ``clrfast`` console script."""

import sys

from .cli import main

sys.exit(main())
