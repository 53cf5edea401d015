"""The composition layer: source -> stages -> sinks, with timing, drop counting and shutdown.

Only this layer (with the CLI and deploy) knows every part of the system.
"""

from edge.pipeline.metrics import LatencyStats  # noqa: F401
from edge.pipeline.runner import Pipeline, RunResult  # noqa: F401
