"""`python -m experiments.cluster`."""
import sys

from experiments.cluster.cli import main

sys.exit(main())
