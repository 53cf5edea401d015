"""Parity gate: the comparator on constructed outputs, ONNX Runtime fp32 vs fp16, and the
cache verdict it records."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import ConfigError, DataFormatError
from edge.inference import load_model_card, open_runtime
from edge.inference.engine_cache import EngineCache, EngineKey
from edge.inference.modelcard import ModelCard
from edge.inference.parity import (ParityConfig, Tolerance, compare_outputs, gate_engine,
                                   load_recorded_inputs, random_inputs, run_parity)
from mlp_models import write_mlp

N_PIX = 40 * 25  # 1000 pixels


def logits(seed=0, classes=5, margin=1.0):
    """(1, classes, 40, 25) logits whose top class leads the runner-up by ``margin``."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(1, classes, 40, 25))
    top = rng.integers(0, classes, size=(40, 25))
    y[0, top, np.arange(40)[:, None], np.arange(25)[None, :]] = y.max(axis=1)[0] + margin
    return y.astype(np.float32)


def swap_top_two(y, n):
    """Copy of y with the two best classes swapped at the first n pixels (row-major)."""
    out = y.copy()
    flat = out.reshape(out.shape[1], -1)
    order = np.argsort(flat, axis=0)
    for p in range(n):
        a, b = order[-1, p], order[-2, p]
        flat[a, p], flat[b, p] = flat[b, p], flat[a, p]
    return out


def test_identical_outputs_pass_with_zero_error():
    y = logits()
    r = compare_outputs([({"logits": y}, {"logits": y.copy()})])
    o = r.outputs["logits"]
    assert r.passed and r.reasons == []
    assert (o.max_abs_err, o.rel_l2, o.violations, o.elements) == (0.0, 0.0, 0, 5 * N_PIX)
    assert o.argmax_agreement == 1.0 and "PASS over 1 input(s)" in r.summary()


def test_element_violations_are_counted_exactly():
    y = logits()
    cand = y.copy()
    cand.reshape(-1)[[3, 50, 999]] += 0.5  # 3 elements off by 0.5
    cfg = ParityConfig(default=Tolerance(atol=0.01, rtol=0.0), min_argmax_agreement=0.0)
    r = compare_outputs([({"logits": y}, {"logits": cand})], cfg)
    o = r.outputs["logits"]
    assert not r.passed and o.violations == 3
    assert o.max_abs_err == pytest.approx(0.5, abs=1e-6)
    assert r.reasons == ["logits: 3 of 5000 values outside atol=0.01 rtol=0 (max |err| 0.5)"]


def test_relative_tolerance_scales_with_reference():
    ref = np.array([[[[100.0]], [[1.0]]]], dtype=np.float32)  # (1, 2, 1, 1)
    cand = ref * np.float32(1.009)  # 0.9 % off everywhere
    ok = compare_outputs([({"y": ref}, {"y": cand})],
                         ParityConfig(default=Tolerance(atol=0.0, rtol=0.01)))
    bad = compare_outputs([({"y": ref}, {"y": cand})],
                          ParityConfig(default=Tolerance(atol=0.0, rtol=0.008)))
    assert ok.passed and not bad.passed and bad.outputs["y"].violations == 2
    assert ok.outputs["y"].max_rel_err == pytest.approx(0.009, rel=1e-4)


@pytest.mark.parametrize("flipped,passed", [(5, True), (6, False)])
def test_argmax_agreement_threshold_is_99_5_percent(flipped, passed):
    """5 of 1000 pixels flipped = 99.5 % (passes); 6 = 99.4 % (fails), with loose atol."""
    y = logits(margin=0.01)
    cand = swap_top_two(y, flipped)
    cfg = ParityConfig(default=Tolerance(atol=10.0, rtol=0.0))
    r = compare_outputs([({"logits": y}, {"logits": cand})], cfg)
    assert r.outputs["logits"].argmax_agree == N_PIX - flipped
    assert r.passed is passed
    if not passed:
        assert r.reasons == ["logits: argmax agreement 99.400 % < required 99.500 %"]


def test_per_output_tolerances():
    y, z = logits(1), logits(2)
    cfg = ParityConfig(default=Tolerance(0.0, 0.0), per_output={"aux": Tolerance(1.0, 0.0)},
                       min_argmax_agreement=0.0)
    r = compare_outputs([({"logits": y, "aux": z}, {"logits": y, "aux": z + 0.5})], cfg)
    assert r.passed and r.outputs["aux"].atol == 1.0 and r.outputs["logits"].atol == 0.0


def test_nan_in_candidate_fails():
    y = logits()
    cand = y.copy()
    cand[0, 0, 0, 0] = np.nan
    r = compare_outputs([({"logits": y}, {"logits": cand})],
                        ParityConfig(default=Tolerance(1e9, 0.0), min_argmax_agreement=0.0))
    assert not r.passed and r.outputs["logits"].violations == 1
    assert r.outputs["logits"].rel_l2 == float("inf")


@pytest.mark.parametrize("pairs,exc,match", [
    ([({"y": np.zeros((1, 2, 2, 2))}, {"y": np.zeros((1, 2, 2, 3))})], DataFormatError,
     r"output 'y': candidate shape \(1, 2, 2, 3\) differs from reference shape \(1, 2, 2, 2\)"),
    ([({"y": np.full((1, 2, 1, 1), np.nan)}, {"y": np.zeros((1, 2, 1, 1))})], DataFormatError,
     r"output 'y': the reference has non-finite values"),
    ([({"y": np.zeros(3)}, {"z": np.zeros(3)})], DataFormatError,
     r"outputs differ: reference has \['y'\], candidate has \['z'\]"),
    ([], DataFormatError, r"parity: no inputs to compare"),
])
def test_comparator_input_errors(pairs, exc, match):
    with pytest.raises(exc, match=match):
        compare_outputs(pairs)


def test_config_errors():
    with pytest.raises(ConfigError, match=r"atol: expected a finite number >= 0, got -1.0"):
        Tolerance(-1.0, 0.0)
    with pytest.raises(ConfigError, match=r"rtol: expected a finite number >= 0, got nan"):
        Tolerance(0.0, float("nan"))
    with pytest.raises(ConfigError, match=r"min_argmax_agreement: expected a fraction in "
                                          r"\[0, 1\], got 1.5"):
        ParityConfig(min_argmax_agreement=1.5)
    with pytest.raises(ConfigError, match=r"precision: expected one of fp32, fp16, got 'int8'"):
        ParityConfig.for_precision("int8")


# -- ONNX Runtime against ONNX Runtime ---------------------------------------------------------

@pytest.fixture
def mlp(tmp_path):
    card_path, params = write_mlp(tmp_path, height=16, width=20)
    return load_model_card(card_path)


class Perturbed:
    """A runtime wrapper that adds a fixed offset to one class at a fraction of pixels."""

    def __init__(self, inner, fraction: float, offset: float = 100.0):
        self.inner, self.fraction, self.offset = inner, fraction, offset

    def run(self, x):
        y = self.inner.run(x).copy()
        n = int(round(self.fraction * y.shape[2] * y.shape[3]))
        y[0, 0].reshape(-1)[:n] += self.offset  # class 0 wins there
        return y


def test_ort_vs_itself_passes_exactly(mlp):
    xs = random_inputs(mlp, 3, seed=1)
    with open_runtime("onnxruntime", mlp) as a, open_runtime("onnxruntime", mlp) as b:
        r = run_parity(a, b, xs, output_name="logits")
    o = r.outputs["logits"]
    assert r.passed and r.inputs == 3 and o.max_abs_err == 0.0 and o.argmax_agreement == 1.0


def test_ort_fp32_vs_fp16_converted_model_passes_fp16_gate(mlp, tmp_path):
    pytest.importorskip("onnxconverter_common")
    from edge.inference.fp16 import convert_fp16

    convert_fp16(mlp.onnx_path, tmp_path / "fp16.onnx", keep_fp32=["head"])
    card16 = ModelCard(**{**mlp.__dict__, "onnx": "fp16.onnx"})
    xs = random_inputs(mlp, 4, seed=2)
    with open_runtime("onnxruntime", mlp) as r32, open_runtime("onnxruntime", card16) as r16:
        r = run_parity(r32, r16, xs, output_name="logits",
                       config=ParityConfig.for_precision("fp16"))
    o = r.outputs["logits"]
    assert r.passed, r.summary()
    assert 0.0 < o.rel_l2 < 2e-3 and o.max_abs_err < 2e-2
    assert o.argmax_agreement >= 0.995 and o.pixels == 4 * 16 * 20


def test_ort_vs_perturbed_fails(mlp):
    xs = random_inputs(mlp, 2, seed=3)
    with open_runtime("onnxruntime", mlp) as ref:
        r = run_parity(ref, Perturbed(ref, fraction=0.02), xs, output_name="logits",
                       config=ParityConfig.for_precision("fp16"))
    o = r.outputs["logits"]
    assert not r.passed
    assert o.violations == 2 * round(0.02 * 320)  # class-0 logit at 6 pixels per input
    assert o.argmax_agreement < 0.995
    assert any("argmax agreement" in s for s in r.reasons)


def test_callables_are_accepted(mlp):
    xs = random_inputs(mlp, 1)
    r = run_parity(lambda x: x[:, :4], lambda x: x[:, :4].copy(), xs, output_name="y")
    assert r.passed and r.outputs["y"].elements == 4 * 16 * 20


# -- the gate records its verdict -----------------------------------------------------------

def _cached_engine(tmp_path, card):
    cache = EngineCache(tmp_path / "cache")
    shape = (1, card.input.channels, card.input.height, card.input.width)
    key = EngineKey(model=card.name, onnx_sha256="0" * 64, trt_version="10.3.0.30",
                    gpu_name="Orin", compute_capability="8.7", precision="fp16",
                    typing="weak", shapes=(("input", shape, shape, shape),))
    cache.get_or_build(key, lambda: b"serialized-engine")
    return cache, key


def test_gate_marks_verified_only_when_it_passes(mlp, tmp_path):
    cache, key = _cached_engine(tmp_path, mlp)
    xs = random_inputs(mlp, 2, seed=4)
    with open_runtime("onnxruntime", mlp) as ref:
        good = gate_engine(cache, key, ref, ref, xs, output_name="logits")
        assert good.passed and cache.is_verified(key)
        bad = gate_engine(cache, key, ref, Perturbed(ref, 0.05), xs, output_name="logits")
    assert not bad.passed and not cache.is_verified(key)
    assert cache.entries()[0].verified is False


def test_gate_that_crashes_leaves_engine_unverified(mlp, tmp_path):
    cache, key = _cached_engine(tmp_path, mlp)
    cache.record_parity(key, True, {})

    def broken(x):
        raise RuntimeError("execute_async_v3 failed")

    with open_runtime("onnxruntime", mlp) as ref, pytest.raises(RuntimeError):
        gate_engine(cache, key, ref, broken, random_inputs(mlp, 1), output_name="logits")
    assert not cache.is_verified(key)


# -- inputs -------------------------------------------------------------------------------

def test_random_inputs_look_like_packed_input(mlp):
    xs = random_inputs(mlp, 2, seed=5)
    assert len(xs) == 2 and all(x.shape == (1, 6, 16, 20) and x.dtype == np.float32
                                for x in xs)
    np.testing.assert_allclose(xs[0].sum(axis=1), 1.0, rtol=1e-5)  # L1 over spectra
    assert not np.array_equal(xs[0], xs[1])
    np.testing.assert_array_equal(random_inputs(mlp, 1, seed=5)[0], xs[0])
    with pytest.raises(ConfigError, match=r"n: expected at least 1 random input, got 0"):
        random_inputs(mlp, 0)


def test_recorded_inputs_from_npz(mlp, tmp_path):
    rng = np.random.default_rng(6)
    batch = rng.random((3, 6, 16, 20))
    single = rng.random((6, 16, 20))
    np.savez(tmp_path / "rec.npz", a_batch=batch, b_single=single, c_other=np.zeros(4))
    xs = load_recorded_inputs(tmp_path / "rec.npz", mlp)
    assert len(xs) == 4 and all(x.shape == (1, 6, 16, 20) and x.dtype == np.float32
                                for x in xs)
    np.testing.assert_array_equal(xs[1][0], batch[1].astype(np.float32))
    np.testing.assert_array_equal(xs[3][0], single.astype(np.float32))
    assert len(load_recorded_inputs(tmp_path / "rec.npz", mlp, limit=2)) == 2


def test_recorded_inputs_errors(mlp, tmp_path):
    np.savez(tmp_path / "wrong.npz", x=np.zeros((1, 5, 16, 20)))
    with pytest.raises(DataFormatError, match=r"wrong.npz: no array of shape \(N, 6, 16, 20\) "
                                              r"for model 'test-mlp'; found x\(1, 5, 16, 20\)"):
        load_recorded_inputs(tmp_path / "wrong.npz", mlp)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match=r"junk.npz: cannot read recorded inputs as NPZ"):
        load_recorded_inputs(tmp_path / "junk.npz", mlp)
