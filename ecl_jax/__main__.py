import sys

from ecl_jax.cli import main

sys.exit(main())
