"""``python -m areal_core`` is the ``areal`` command."""

import sys

from areal_core.cli import main

sys.exit(main())
