"""What can go wrong when the grid runs on a cluster, by what the coordinator does about it."""
from __future__ import annotations

from engine.errors import StateError


class ClusterError(StateError):
    """The grid cannot be sent to the cluster (dirty tree, no remote, bad option); nothing ran."""


class CellFailed(RuntimeError):
    """A stage failed in a way that retrying cannot fix; never retried."""


class CellCrashed(RuntimeError):
    """A stage's command died or a transfer failed; Ray retries the task."""
