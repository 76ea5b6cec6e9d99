"""``python -m experiments.bench ...`` (also the workers' entry: ``--worker JSON``)."""

import sys

from .runner import main

sys.exit(main())
