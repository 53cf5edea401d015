"""Atomic file writing shared by the writers and the recorder (see :mod:`edge.core.fileio`)."""

from edge.core.fileio import atomic_open

__all__ = ["atomic_open"]
