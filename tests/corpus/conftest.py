"""Session fixtures of the corpus tests (see corpus_helpers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from corpus_helpers import BROKEN, FRAMES, GOOD, corpus_run, model, simulate


@pytest.fixture(scope="session")
def corpus_parts(tmp_path_factory) -> dict[str, Path]:
    """Good recordings, broken ones, two models and a config, made once per session."""
    root = tmp_path_factory.mktemp("corpus")
    good = root / "good"
    for i, rec in enumerate(GOOD):
        simulate(good / rec, seed=i)
    mixed = root / "mixed"
    shutil.copytree(good, mixed)
    shutil.copytree(good / GOOD[0], mixed / BROKEN[0])
    shutil.rmtree(mixed / BROKEN[0] / "calibration")
    shutil.copytree(good / GOOD[1], mixed / BROKEN[1])
    last = mixed / BROKEN[1] / f"frame_{FRAMES - 1:06d}.npz"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    simulate(mixed / BROKEN[2], seed=5, preset="snapshot25")
    cfg = root / "corpus.yaml"
    cfg.write_text(yaml.safe_dump({"processing": {"backend": "numpy"},
                                   "model": {"runtime": "onnxruntime"}}))
    return {"good": good, "mixed": mixed, "config": cfg,
            "model_a": model(root / "model-a", seed=0), "model_b": model(root / "model-b", seed=1)}


@pytest.fixture(scope="session")
def serial_mixed(corpus_parts, tmp_path_factory) -> Path:
    """The mixed corpus run serially (the reference of the distributed runs)."""
    out = tmp_path_factory.mktemp("runs") / "serial"
    assert corpus_run(corpus_parts, corpus_parts["mixed"], out, "--workers", "0") == 0
    return out
