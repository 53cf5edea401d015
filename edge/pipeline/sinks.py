"""Sinks: where processed frames go (PNG overlays and maps, NPZ maps, nothing).

Every file is written atomically (temporary name, then ``os.replace``) so an interrupted run
never leaves a half-written image or map.  Metrics are written by the runner, not a sink.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np

from edge.core.fileio import atomic_write_bytes
from edge.core.frame import Frame
from edge.errors import HsiEdgeError

__all__ = ["Sink", "NullSink", "PngSink", "NpzSink"]

log = logging.getLogger(__name__)


class Sink:
    """Base class: ``write(frame)`` for every processed frame, then ``close()``."""

    name = "sink"

    def write(self, frame: Frame) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class NullSink(Sink):
    """Discards frames (for benchmarks); counts them."""

    name = "null"

    def __init__(self) -> None:
        self.count = 0

    def write(self, frame: Frame) -> None:
        self.count += 1


class _EveryN(Sink):
    def __init__(self, out_dir: str | os.PathLike, every: int = 1):
        if int(every) < 1:
            raise ValueError(f"every: expected an integer >= 1, got {every!r}")
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.every = int(every)
        self._seen = 0

    def write(self, frame: Frame) -> None:
        due = self._seen % self.every == 0
        self._seen += 1
        if due:
            try:
                self._write(frame)
            except OSError as exc:
                # Disk full, read-only or vanished folder: one clear line, the run stops
                # cleanly (atomic writes leave no partial file behind).
                raise HsiEdgeError(
                    f"{self.name} sink: cannot write frame {frame.meta.frame_id} to "
                    f"{self.out}: {exc.strerror or exc}") from exc

    def _write(self, frame: Frame) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class PngSink(_EveryN):
    """Every N-th frame: the segmentation overlay and the StO2 map with a colour bar.

    Files: ``overlay_<frame id>.png`` (true-colour rendering of the reflectance with the class
    colours alpha-blended; invalid pixels hatched) when the frame has a class map, and
    ``sto2_<frame id>.png`` (StO2 colour map, colour bar 0-100 %; pixels without a valid StO2
    drawn by reason -- grey: no estimate, hatched: low blood or uncertain, white: specular --
    with a legend of the reasons present and their share, :func:`edge.processing.post.
    mark_invalid`).  The overlay draws specular highlights white, as the StO2 map does.
    """

    name = "png"

    def __init__(self, out_dir, every: int = 10, *, colors: np.ndarray | None = None,
                 class_names: tuple[str, ...] = (), alpha: float = 0.4,
                 max_sigma: float | None = None):
        super().__init__(out_dir, every)
        self.colors = colors
        self.class_names = tuple(class_names)
        self.alpha = alpha
        self.max_sigma = max_sigma

    def _write(self, frame: Frame) -> None:
        from PIL import Image

        from edge.physics import cube_to_rgb
        from edge.core.chain import FLAG_SPECULAR
        from edge.processing.post import (colorbar, colormap, invalid_legend, mark_invalid,
                                          overlay)

        fid = f"{frame.meta.frame_id:06d}"
        p = frame.products
        flags = p.get("flags")
        if "classes" in p and self.colors is not None and "reflectance" in p:
            rgb = cube_to_rgb(p["reflectance"], frame.wavelengths)
            classes = p["classes"]
            invalid = classes >= len(self.colors)
            img = overlay(rgb, np.where(invalid, 0, classes), self.colors, self.alpha,
                          invalid=invalid)
            spec = None if flags is None else (flags & FLAG_SPECULAR) != 0
            specular = spec is not None and bool(spec.any())
            if specular:
                img[spec] = 255
            self._save(self._marked(self._with_legend(Image.fromarray(img), specular), p),
                       f"overlay_{fid}.png")
        if "sto2" in p:
            img = colormap(p["sto2"], 0.0, 1.0, "sto2")
            entries = []
            if flags is not None and flags.shape == img.shape[:2]:
                img = mark_invalid(img, flags)
                entries = invalid_legend(flags, self.max_sigma)
            img = colorbar(img, 0.0, 1.0, "sto2", label="StO2")
            self._save(self._marked(self._invalid_panel(Image.fromarray(img), entries), p),
                       f"sto2_{fid}.png")

    @staticmethod
    def _marked(image, products):
        """Stamp the run's calibration mark (e.g. EXPIRED CALIBRATION) across the top."""
        mark = products.get("calibration_mark")
        if not mark:
            return image
        from PIL import ImageDraw
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 0, image.width, 13), fill=(200, 0, 0))
        draw.text((3, 1), str(mark), fill=(255, 255, 255))
        return image

    def _with_legend(self, image, specular: bool = False):
        """Append a panel listing the class colours and names (hatched = withheld; white =
        specular highlight, when the frame has one)."""
        if not self.class_names:
            return image
        from PIL import Image, ImageDraw

        line = 14
        panel = Image.new("RGB", (130, image.height), (255, 255, 255))
        draw = ImageDraw.Draw(panel)
        entries = list(zip(self.class_names, (tuple(int(v) for v in c) for c in self.colors)))
        entries.append(("withheld", (128, 128, 128)))
        if specular:
            entries.append(("specular", (255, 255, 255)))
        for i, (name, color) in enumerate(entries[: max(1, image.height // line)]):
            y = 4 + i * line
            draw.rectangle((4, y, 14, y + 10), fill=color, outline=(0, 0, 0))
            draw.text((20, y - 1), name, fill=(0, 0, 0))
        out = Image.new("RGB", (image.width + panel.width, image.height))
        out.paste(image, (0, 0))
        out.paste(panel, (image.width, 0))
        return out

    @staticmethod
    def _invalid_panel(image, entries):
        """Append a strip below the StO2 map naming why pixels have no StO2 (swatch, share)."""
        if not entries:
            return image
        from PIL import Image, ImageDraw

        line = 14
        panel = Image.new("RGB", (image.width, 4 + line * len(entries)), (255, 255, 255))
        draw = ImageDraw.Draw(panel)
        for i, (label, swatch) in enumerate(entries):
            y = 2 + i * line
            panel.paste(Image.fromarray(swatch), (4, y))
            draw.rectangle((4, y, 13, y + 9), outline=(0, 0, 0))
            draw.text((20, y - 1), f"no StO2: {label}", fill=(0, 0, 0))
        out = Image.new("RGB", (image.width, image.height + panel.height), (255, 255, 255))
        out.paste(image, (0, 0))
        out.paste(panel, (0, image.height))
        return out

    def _save(self, image, name: str) -> None:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        atomic_write_bytes(self.out / name, buf.getvalue())


class NpzSink(_EveryN):
    """Every N-th frame: the maps, pixel flags and class map as ``maps_<frame id>.npz``
    (``sto2_sigma``, the StO2 standard error, when the chain has quality rules)."""

    name = "npz"

    KEYS = ("sto2", "sto2_sigma", "thb", "sto2_index", "nir", "thi", "twi", "flags", "classes")

    def _write(self, frame: Frame) -> None:
        arrays = {k: frame.products[k] for k in self.KEYS if k in frame.products}
        arrays["wavelengths"] = frame.wavelengths
        arrays["frame_id"] = np.int64(frame.meta.frame_id)
        arrays["timestamp_ns"] = np.int64(frame.meta.timestamp_ns)
        if frame.products.get("calibration_mark"):
            arrays["calibration_mark"] = np.str_(frame.products["calibration_mark"])
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(self.out / f"maps_{frame.meta.frame_id:06d}.npz", buf.getvalue())
