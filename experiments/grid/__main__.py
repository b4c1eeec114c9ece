"""`python -m experiments.grid`."""
import sys

from experiments.grid.cli import main

sys.exit(main())
