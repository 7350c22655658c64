"""``python -m pipeline.experiment``: see :mod:`pipeline.experiment.run`."""

import sys

from pipeline.experiment.run import main

sys.exit(main())
