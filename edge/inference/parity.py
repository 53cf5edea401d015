"""Parity gate: does a candidate runtime reproduce a reference runtime on the same inputs?

Used to accept a TensorRT engine against ONNX Runtime (``hsi-edge engine check``) and an fp16
ONNX model against its fp32 original.  Two criteria, both must hold:

1. Element-wise, per output: ``|cand - ref| <= atol + rtol * |ref|`` for every element
   (the ``numpy.allclose`` rule, per-output ``atol``/``rtol``); a non-finite candidate value
   where the reference is finite is a violation.
2. Segmentation outputs (4-D, ``(N, classes, H, W)`` with classes > 1): the arg-max class
   agrees on at least ``min_argmax_agreement`` of the pixels (default 99.5 %, issue 5).

The result carries the numbers (max abs/rel error, ``‖cand−ref‖/‖ref‖``, violation counts,
argmax agreement) so a failure says by how much.  Nothing here records a verdict: the caller
stores it with :meth:`edge.inference.engine_cache.EngineCache.record_parity` — a failing engine
is never marked good.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from edge.errors import ConfigError, DataFormatError
from edge.inference.modelcard import ModelCard

__all__ = ["Tolerance", "ParityConfig", "OutputParity", "ParityResult", "compare_outputs",
           "run_parity", "gate_engine", "random_inputs", "load_recorded_inputs",
           "DEFAULT_TOLERANCES"]

log = logging.getLogger(__name__)

#: Starting points per precision (document, then tune per model with --atol/--rtol).
#: fp16 has an 11-bit significand (relative step 2**-11 ≈ 4.9e-4 per rounding); a few layers
#: of accumulation put logits a few 1e-3 off, so 2e-2 leaves headroom without hiding bugs.
DEFAULT_TOLERANCES = {"fp32": (1e-4, 1e-3), "fp16": (2e-2, 2e-2)}


@dataclass(frozen=True)
class Tolerance:
    """Absolute and relative tolerance of one output (``|c - r| <= atol + rtol*|r|``)."""

    atol: float
    rtol: float

    def __post_init__(self) -> None:
        for name in ("atol", "rtol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise ConfigError(f"{name}: expected a finite number >= 0, got {v!r}")


@dataclass(frozen=True)
class ParityConfig:
    """Gate settings.

    Attributes
    ----------
    default : Tolerance
        Tolerance of outputs not named in ``per_output``.
    per_output : mapping of str to Tolerance
    min_argmax_agreement : float in [0, 1]
        Minimum fraction of pixels whose arg-max class agrees (segmentation outputs only).
    """

    default: Tolerance = Tolerance(*DEFAULT_TOLERANCES["fp32"])
    per_output: Mapping[str, Tolerance] = field(default_factory=dict)
    min_argmax_agreement: float = 0.995

    def __post_init__(self) -> None:
        a = self.min_argmax_agreement
        if not (isinstance(a, (int, float)) and 0.0 <= a <= 1.0):
            raise ConfigError(f"min_argmax_agreement: expected a fraction in [0, 1], got {a!r}")

    @classmethod
    def for_precision(cls, precision: str, **kw: Any) -> "ParityConfig":
        if precision not in DEFAULT_TOLERANCES:
            raise ConfigError(f"precision: expected one of {', '.join(DEFAULT_TOLERANCES)}, "
                              f"got {precision!r}")
        return cls(default=Tolerance(*DEFAULT_TOLERANCES[precision]), **kw)

    def tolerance(self, name: str) -> Tolerance:
        return self.per_output.get(name, self.default)


@dataclass
class OutputParity:
    """Numbers for one output, accumulated over all inputs."""

    name: str
    atol: float
    rtol: float
    elements: int = 0
    violations: int = 0
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    rel_l2: float = 0.0
    pixels: int = 0
    argmax_agree: int = 0
    segmentation: bool = False
    _err2: float = 0.0
    _ref2: float = 0.0

    @property
    def argmax_agreement(self) -> float | None:
        return self.argmax_agree / self.pixels if self.segmentation and self.pixels else None

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        d["argmax_agreement"] = self.argmax_agreement
        return d


@dataclass
class ParityResult:
    """Verdict of the gate and the numbers behind it."""

    passed: bool
    inputs: int
    outputs: dict[str, OutputParity]
    min_argmax_agreement: float
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "inputs": self.inputs,
                "min_argmax_agreement": self.min_argmax_agreement, "reasons": self.reasons,
                "outputs": {k: v.to_dict() for k, v in self.outputs.items()}}

    def summary(self) -> str:
        """Human-readable lines, one per output, then the verdict."""
        lines = []
        for o in self.outputs.values():
            agree = (f", argmax agreement {100 * o.argmax_agreement:.3f} %"
                     if o.argmax_agreement is not None else "")
            lines.append(f"{o.name}: max |err| {o.max_abs_err:.3g}, max rel {o.max_rel_err:.3g}, "
                         f"rel L2 {o.rel_l2:.3g}, {o.violations}/{o.elements} outside "
                         f"atol={o.atol:g} rtol={o.rtol:g}{agree}")
        lines.append(("PASS" if self.passed else "FAIL") + f" over {self.inputs} input(s)"
                     + ("" if self.passed else ": " + "; ".join(self.reasons)))
        return "\n".join(lines)


def _accumulate(acc: OutputParity, ref: np.ndarray, cand: np.ndarray) -> None:
    if ref.shape != cand.shape:
        raise DataFormatError(f"output {acc.name!r}: candidate shape {cand.shape} differs from "
                              f"reference shape {ref.shape}")
    r = ref.astype(np.float64)
    c = cand.astype(np.float64)
    if not np.all(np.isfinite(r)):
        raise DataFormatError(f"output {acc.name!r}: the reference has non-finite values; "
                              f"parity cannot be judged against it")
    err = np.abs(c - r)
    err = np.where(np.isfinite(err), err, np.inf)
    bound = acc.atol + acc.rtol * np.abs(r)
    acc.elements += r.size
    acc.violations += int(np.count_nonzero(~(err <= bound)))
    acc.max_abs_err = max(acc.max_abs_err, float(err.max(initial=0.0)))
    nz = np.abs(r) > 0  # relative error is only meaningful where the reference is non-zero
    if np.any(nz):
        acc.max_rel_err = max(acc.max_rel_err, float((err[nz] / np.abs(r[nz])).max()))
    acc._err2 += float(np.sum(err ** 2))  # inf where the candidate is not finite
    acc._ref2 += float(np.sum(r * r))
    acc.rel_l2 = (float(np.sqrt(acc._err2 / acc._ref2)) if acc._ref2 > 0
                  else (0.0 if acc._err2 == 0 else float("inf")))
    if r.ndim == 4 and r.shape[1] > 1:
        acc.segmentation = True
        cn = np.where(np.isfinite(c), c, -np.inf)
        acc.pixels += r.shape[0] * r.shape[2] * r.shape[3]
        acc.argmax_agree += int(np.count_nonzero(np.argmax(r, axis=1) == np.argmax(cn, axis=1)))


def compare_outputs(pairs: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
                    config: ParityConfig = ParityConfig()) -> ParityResult:
    """Judge candidate outputs against reference outputs.

    Parameters
    ----------
    pairs : iterable of (reference, candidate)
        Each a mapping output name -> ndarray (any float dtype; compared in float64). Both
        mappings must have the same names and shapes.
    config : ParityConfig

    Returns
    -------
    ParityResult
    """
    outputs: dict[str, OutputParity] = {}
    n = 0
    for ref, cand in pairs:
        if set(ref) != set(cand):
            raise DataFormatError(f"outputs differ: reference has {sorted(ref)}, candidate has "
                                  f"{sorted(cand)}")
        for name in ref:
            if name not in outputs:
                tol = config.tolerance(name)
                outputs[name] = OutputParity(name, tol.atol, tol.rtol)
            _accumulate(outputs[name], np.asarray(ref[name]), np.asarray(cand[name]))
        n += 1
    if n == 0:
        raise DataFormatError("parity: no inputs to compare")
    reasons = []
    for o in outputs.values():
        if o.violations:
            reasons.append(f"{o.name}: {o.violations} of {o.elements} values outside "
                           f"atol={o.atol:g} rtol={o.rtol:g} (max |err| {o.max_abs_err:.3g})")
        agree = o.argmax_agreement
        if agree is not None and agree < config.min_argmax_agreement:
            reasons.append(f"{o.name}: argmax agreement {100 * agree:.3f} % < required "
                           f"{100 * config.min_argmax_agreement:.3f} %")
    return ParityResult(passed=not reasons, inputs=n, outputs=outputs,
                        min_argmax_agreement=config.min_argmax_agreement, reasons=reasons)


Runner = Callable[[np.ndarray], np.ndarray]


def run_parity(reference: Any, candidate: Any, inputs: Iterable[np.ndarray], *,
               output_name: str = "output", config: ParityConfig = ParityConfig()
               ) -> ParityResult:
    """Run both on each input and judge the outputs.

    Parameters
    ----------
    reference, candidate : Runtime or callable
        Anything with ``run(x) -> ndarray`` (a :class:`~edge.inference.base.Runtime`) or a
        plain callable ``x -> ndarray``.
    inputs : iterable of ndarray of shape (1, C, H, W)
    output_name : str
        Name the single output is reported under (use the card's output name).
    """
    ref_fn: Runner = getattr(reference, "run", reference)
    cand_fn: Runner = getattr(candidate, "run", candidate)

    def pairs():
        for x in inputs:
            yield {output_name: ref_fn(x)}, {output_name: cand_fn(x)}

    result = compare_outputs(pairs(), config)
    log.info("parity: %s", result.summary().replace("\n", " | "))
    return result


def random_inputs(card: ModelCard, n: int = 4, seed: int = 0) -> list[np.ndarray]:
    """``n`` inputs of the card's shape and dtype that look like packed network input.

    Spectral channels are L1-normalised per pixel (as the pack stage does, FACTS.md "htc
    models"); map channels are fractions in [0, 1].
    """
    if n < 1:
        raise ConfigError(f"n: expected at least 1 random input, got {n}")
    spec = card.input
    rng = np.random.default_rng(seed)
    n_spec = 0 if spec.spectra is None else len(spec.spectra.grid())
    out = []
    for _ in range(n):
        x = rng.random((1, spec.channels, spec.height, spec.width))
        if n_spec:
            s = x[:, :n_spec]
            x[:, :n_spec] = s / np.sum(s, axis=1, keepdims=True)
        out.append(x.astype(spec.dtype))
    return out


def load_recorded_inputs(path: str | Path, card: ModelCard, limit: int | None = None
                         ) -> list[np.ndarray]:
    """Read packed inputs recorded by the pipeline from an NPZ.

    Every array in the file of shape (N, C, H, W) or (C, H, W) matching the card is used,
    split into (1, C, H, W) items (arrays in name order).  Recorded data is cast to the card's
    dtype.

    Raises
    ------
    DataFormatError
        Unreadable file, or no array of the card's input shape in it.
    """
    spec = card.input
    chw = (spec.channels, spec.height, spec.width)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in sorted(z.files)}
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{path}: cannot read recorded inputs as NPZ: {exc}") from None
    items: list[np.ndarray] = []
    seen = []
    for k, a in arrays.items():
        seen.append(f"{k}{tuple(a.shape)}")
        if a.ndim == 3 and a.shape == chw:
            a = a[None]
        if a.ndim == 4 and a.shape[1:] == chw:
            items.extend(a[i:i + 1].astype(spec.dtype) for i in range(a.shape[0]))
    if not items:
        raise DataFormatError(f"{path}: no array of shape (N, {chw[0]}, {chw[1]}, {chw[2]}) for "
                              f"model {card.name!r}; found {', '.join(seen) or 'no arrays'}")
    return items[:limit] if limit else items


def gate_engine(cache: Any, key: Any, reference: Any, candidate: Any,
                inputs: Iterable[np.ndarray], *, output_name: str,
                config: ParityConfig = ParityConfig()) -> ParityResult:
    """Run the gate and record the verdict for the cached engine under ``key``.

    The cache (:class:`~edge.inference.engine_cache.EngineCache`) marks the engine verified
    only when the gate passes; a failing gate overwrites any earlier "passed" record, so an
    engine that fails is never left marked good.
    """
    try:
        result = run_parity(reference, candidate, inputs, output_name=output_name,
                            config=config)
    except Exception as exc:  # a gate that could not finish is a failed gate
        cache.record_parity(key, False, {"passed": False, "error": f"{type(exc).__name__}: "
                                                                   f"{exc}"})
        raise
    cache.record_parity(key, result.passed, result.to_dict())
    return result
