"""The TensorRT runtime on real TensorRT and a GPU (markers ``tensorrt`` and ``gpu``).

Skipped (with the reason) where TensorRT or a GPU is missing.  Small models, so builds take
seconds; each test uses its own cache directory.  The classifier's card declares its fp16
model (``onnx_fp16``), so ``precision="fp16"`` builds on both majors: through the FP16 flag
on 10.x, strongly typed from that model on 11.x (which has no FP16 flag).
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.cli import main
from edge.errors import EngineError
from edge.inference import load_model_card
from edge.inference.engine_cache import EngineCache
from edge.inference.modelcard import ModelCard
from edge.inference.onnxruntime_runtime import OnnxRuntimeRuntime
from edge.inference.parity import ParityConfig, gate_engine, random_inputs
from onnx_models import write_pixel_classifier

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]

WL = np.linspace(500, 1000, 6)


@pytest.fixture
def classifier(tmp_path):
    from edge.inference.fp16 import convert_fp16

    card_path, w, b = write_pixel_classifier(tmp_path / "m", wavelengths=WL, maps=("sto2",),
                                             classes=5, height=32, width=48)
    convert_fp16(card_path.parent / "model.onnx", card_path.parent / "model.fp16.onnx")
    card_path.write_text(card_path.read_text() + "onnx_fp16: model.fp16.onnx\n")
    return load_model_card(card_path), w, b


def _major() -> int:
    from edge.inference.tensorrt_build import import_tensorrt, trt_major
    return trt_major(import_tensorrt().__version__)


def test_auto_precision_per_major(tmp_path):
    """auto: fp16 via the FP16 flag on 10.x; on 11.x fp32 from a card without onnx_fp16."""
    from edge.inference.tensorrt_runtime import TensorRTRuntime

    card = load_model_card(write_pixel_classifier(tmp_path / "a", maps=("sto2",), height=16,
                                                  width=16)[0])
    with TensorRTRuntime(card, cache_dir=tmp_path / "c") as rt:
        want = ("fp16", "weak") if _major() < 11 else ("fp32", "strong")
        assert (rt.key.precision, rt.key.typing) == want


def _reference(w, b, x):
    return np.einsum("kc,nchw->nkhw", w.astype(np.float64), x.astype(np.float64)) \
        + b[None, :, None, None]


def test_fp32_engine_matches_reference_and_is_cached(tmp_path, classifier):
    from edge.inference.tensorrt_runtime import TensorRTRuntime, build_engine

    card, w, b = classifier
    x = random_inputs(card, 1, seed=1)[0]
    with TensorRTRuntime(card, cache_dir=tmp_path / "c", precision="fp32") as rt:
        (i,), (o,) = rt.inputs(), rt.outputs()
        y = rt.run(x)
        y2 = rt.run(x)
    assert (i.name, i.shape, i.dtype) == ("input", (1, 7, 32, 48), "float32")
    assert (o.name, o.shape) == ("logits", (1, 5, 32, 48))
    ref = _reference(w, b, x)
    # fp32 engines are built with TF32 off (build_settings); 2e-3 relative is a loose bound.
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 2e-3
    np.testing.assert_array_equal(y, y2)  # deterministic, buffers reused correctly
    _, _, built = build_engine(card, cache=EngineCache(tmp_path / "c"), precision="fp32")
    assert built is False  # second request is a cache hit


def test_fp16_engine_passes_gate_and_is_marked_verified(tmp_path, classifier):
    from edge.inference.tensorrt_runtime import TensorRTRuntime

    card, _, _ = classifier
    cand = TensorRTRuntime(card, cache_dir=tmp_path / "c", precision="fp16")
    with cand, OnnxRuntimeRuntime(card) as ref:
        assert not cand.cache.is_verified(cand.key)
        result = gate_engine(cand.cache, cand.key, ref, cand, random_inputs(card, 3, seed=2),
                             output_name="logits", config=ParityConfig.for_precision("fp16"))
    assert result.passed, result.summary()
    assert cand.cache.is_verified(cand.key)
    with TensorRTRuntime(card, cache_dir=tmp_path / "c", precision="fp16",
                         require_verified=True) as again:
        assert again.key == cand.key


def test_unverified_engine_refused_when_required(tmp_path, classifier):
    from edge.inference.tensorrt_runtime import TensorRTRuntime

    card, _, _ = classifier
    with pytest.raises(EngineError, match=r"has not passed the parity gate"):
        TensorRTRuntime(card, cache_dir=tmp_path / "c", precision="fp32",
                        require_verified=True).load()


def test_strongly_typed_build_from_fp16_onnx(tmp_path, classifier):
    pytest.importorskip("onnxconverter_common")
    from edge.inference.fp16 import convert_fp16
    from edge.inference.tensorrt_runtime import TensorRTRuntime

    card, w, b = classifier
    convert_fp16(card.onnx_path, card.onnx_path.with_name("fp16.onnx"))
    x = random_inputs(card, 1, seed=3)[0]
    with TensorRTRuntime(card, cache_dir=tmp_path / "c", precision="fp16", strongly_typed=True,
                         onnx_path=card.onnx_path.with_name("fp16.onnx")) as rt:
        assert rt.key.typing == "strong"
        y = rt.run(x)
    ref = _reference(w, b, x)
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 3e-3
    # Asking for fp32 from an fp16 graph is refused before building.
    with pytest.raises(EngineError, match=r"which is fp16, but precision='fp32'"):
        TensorRTRuntime(card, cache_dir=tmp_path / "c", precision="fp32", strongly_typed=True,
                        onnx_path=card.onnx_path.with_name("fp16.onnx")).load()


def test_device_input_read_in_place_on_its_stream(tmp_path, classifier):
    """A DeviceTensor input is bound in place and run on its stream, same context; checked
    against the card first (a wrong dtype is refused before TensorRT sees the pointer)."""
    import pycuda.driver as cuda

    from edge.core.tensor import DeviceTensor
    from edge.inference.tensorrt_runtime import TensorRTRuntime

    card, w, b = classifier
    x = random_inputs(card, 1, seed=4)[0]
    cuda.init()
    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    try:
        stream = cuda.Stream()
        d_input = cuda.to_device(x)
        tensor = DeviceTensor(int(d_input), x.shape, x.dtype, int(stream.handle))
        rt = TensorRTRuntime(card, cache_dir=tmp_path / "c", precision="fp32")
        with rt:
            y = rt.run(tensor)
            host = np.empty((1, 5, 32, 48), np.float32)
            cuda.memcpy_dtoh(host, rt.output_device_ptr)
            with pytest.raises(EngineError, match=r"input: expected dtype float32, got float16"):
                rt.run(DeviceTensor(int(d_input), x.shape, "float16", int(stream.handle)))
        d_input.free()
    finally:
        ctx.pop()
        ctx.detach()
    ref = _reference(w, b, x)
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 2e-3
    np.testing.assert_array_equal(host, y)


def test_cli_build_check_info(tmp_path, classifier, capsys):
    card, _, _ = classifier
    cache = str(tmp_path / "c")
    assert main(["engine", "build", card.path, "--cache", cache, "--precision", "fp16"]) == 0
    assert capsys.readouterr().out.startswith("built ")
    assert main(["engine", "check", card.path, "--cache", cache, "--precision", "fp16",
                 "--random", "2"]) == 0
    assert "PASS over 2 input(s)" in capsys.readouterr().out
    assert main(["engine", "info", "--cache", cache]) == 0
    assert capsys.readouterr().out.rstrip().endswith("verified")
    # Zero tolerance against fp32 ONNX Runtime: fp16 rounding must show, the gate fails,
    # exits 1 and the engine is no longer marked good.
    assert main(["engine", "check", card.path, "--cache", cache, "--precision", "fp16",
                 "--atol", "0", "--rtol", "0"]) == 1
    assert "FAIL over 4 input(s)" in capsys.readouterr().out
    (entry,) = EngineCache(cache).entries()
    assert entry.verified is False


def test_fp16_card_input(tmp_path):
    """A card whose packed input is float16 gets an engine with a float16 input binding."""
    from edge.inference.tensorrt_runtime import TensorRTRuntime

    card_path, w, b = write_pixel_classifier(tmp_path / "h", maps=("sto2", "thi"),
                                             dtype="float16", height=16, width=16)
    card = load_model_card(card_path)
    assert isinstance(card, ModelCard)
    x = random_inputs(card, 1, seed=5)[0]
    with TensorRTRuntime(card, cache_dir=tmp_path / "c", precision="fp16",
                         strongly_typed=True) as rt:
        assert rt.inputs()[0].dtype == "float16"
        y = rt.run(x)
    ref = _reference(w, b, x)
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 3e-3
