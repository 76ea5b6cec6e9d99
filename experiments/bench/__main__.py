"""``python -m experiments.bench ...`` (also the workers' entry: ``--worker JSON``)."""

import sys

from .runner import main

try:
    sys.exit(main())
except KeyboardInterrupt:  # one line, as ecl-jax run: the rows done so far are already on disk
    print("\ninterrupted: the benchmark's finished rows are in its --out folder (results.jsonl)", file=sys.stderr)
    sys.exit(130)
