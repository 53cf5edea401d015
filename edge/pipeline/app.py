"""The main job's composition, one import away: camera factory (:mod:`.cameras`), reference
capture (:mod:`.reference`), backend factory (:mod:`.backend_factory`), truth scoring
(:mod:`.truth`), output folder and JSON (:mod:`.outputs`) and job assembly (:mod:`.job`).

camera (simulated, replay or the simulated bench) -> flat-field calibration (a saved record,
or dark and white references captured at start) -> backend chain -> model -> post -> sinks,
then ``metrics.json``.  Used by ``hsi-edge run``, ``hsi-edge bench`` and the workflows.
"""

from __future__ import annotations

from edge.pipeline.backend_factory import cuda_available, make_backend
from edge.pipeline.cameras import (BENCH_FPS, DEFAULT_PRESET, build_camera, camera_preset,
                                   start_triggers)
from edge.pipeline.job import JobResult, resolve_model_card, run_job
from edge.pipeline.outputs import json_safe, prepare_out_dir, write_json
from edge.pipeline.reference import obtain_flatfield
from edge.pipeline.truth import TruthScorer

__all__ = ["build_camera", "obtain_flatfield", "make_backend", "resolve_model_card", "run_job",
           "JobResult", "cuda_available", "prepare_out_dir", "write_json", "json_safe",
           "camera_preset", "start_triggers", "TruthScorer", "BENCH_FPS", "DEFAULT_PRESET"]
