"""``python -m pipeline.bundles``: see :mod:`pipeline.bundles.cli`."""

import sys

from pipeline.bundles.cli import main

sys.exit(main())
