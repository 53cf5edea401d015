"""Helpers of the corpus tests: a small corpus made by `hsi-edge simulate` (tiny frames, real
ONNX models, broken copies)."""

from __future__ import annotations

from pathlib import Path

from edge.cli import main
from onnx_models import write_pixel_classifier

ROWS, COLS, FRAMES = 16, 20, 2
#: Model input: four tivita bands plus two maps (a snapshot25 recording has no 540 nm band).
WAVELENGTHS = (540.0, 560.0, 580.0, 760.0)
GOOD = ("site-a/case-1", "site-a/case-2", "site-b/case-3")
BROKEN = ("broken/no-calibration", "broken/truncated", "broken/wrong-bands")


def simulate(out: Path, *, seed: int, preset: str = "tivita") -> None:
    rc = main(["simulate", "--frames", str(FRAMES), "--out", str(out), "--rows", str(ROWS),
               "--cols", str(COLS), "--no-preview", "--calibration-frames", "2",
               "--seed", str(seed), "--preset", preset])
    assert rc == 0


def model(directory: Path, seed: int) -> Path:
    card, _, _ = write_pixel_classifier(directory, wavelengths=WAVELENGTHS, maps=("sto2", "nir"),
                                        classes=3, height=ROWS, width=COLS, seed=seed)
    assert main(["model", "card-hash", str(card), "--write"]) == 0
    return card


def corpus_run(parts, corpus: Path, out: Path, *extra: str, model_key: str = "model_a") -> int:
    return main(["corpus", "run", str(corpus), "--config", str(parts["config"]), "--model",
                 str(parts[model_key]), "--out", str(out), "--no-progress", *extra])
