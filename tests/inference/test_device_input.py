"""Data that says where it lives: DeviceTensor and the runtime contract for device input.

CPU tests.  ONNX Runtime takes host arrays only; a runtime that declares
``accepts_device_input`` gets the DeviceTensor itself, after the same card checks (shape,
dtype) a host array gets.  The device runtime here reads host memory through the tensor's
pointer (so the test can check numbers without a GPU); the CUDA/TensorRT path runs in
tests/tensorrt_real and tests/gpu.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from edge.core.frame import Frame, FrameMeta
from edge.core.tensor import DeviceTensor, describe
from edge.errors import DataFormatError, EngineError
from edge.inference import load_model_card, open_runtime
from edge.inference.onnxruntime_runtime import OnnxRuntimeRuntime
from edge.pipeline.stages import InferStage
from onnx_models import write_pixel_classifier

WL = [500.0, 600.0, 700.0]


class PointerRuntime(OnnxRuntimeRuntime):
    """A runtime that accepts device input, for CPU tests: the "device" is host memory."""

    name = "pointer"
    accepts_device_input = True

    def __init__(self, card):
        super().__init__(card)
        self.device_calls = 0

    def _do_run_device(self, x: DeviceTensor) -> np.ndarray:
        self.device_calls += 1
        buf = (ctypes.c_char * x.nbytes).from_address(x.ptr)
        return self._do_run(np.frombuffer(buf, x.dtype).reshape(x.shape))


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    path, _, _ = write_pixel_classifier(tmp_path_factory.mktemp("m"), wavelengths=WL,
                                        maps=("sto2",))
    return load_model_card(path)


def _input(card, seed=0) -> np.ndarray:
    spec = card.input
    rng = np.random.default_rng(seed)
    return rng.random((1, spec.channels, spec.height, spec.width)).astype(spec.dtype)


def _view(x: np.ndarray, **kw) -> DeviceTensor:
    return DeviceTensor(x.ctypes.data, kw.get("shape", x.shape), kw.get("dtype", x.dtype),
                        kw.get("stream", 0))


# ---- DeviceTensor -------------------------------------------------------------------------
def test_device_tensor_normalises_and_describes():
    t = DeviceTensor(np.uint64(0x7F00), [1, np.int64(3), 4, 5], "float16", np.int32(7))
    assert (t.ptr, t.shape, t.dtype, t.stream) == (0x7F00, (1, 3, 4, 5), np.float16, 7)
    assert type(t.ptr) is int and all(type(d) is int for d in t.shape)
    assert (t.ndim, t.size, t.nbytes) == (4, 60, 120)
    assert describe(t) == "device tensor float16 (1, 3, 4, 5) at 0x7f00"
    assert describe(np.zeros((2, 3), np.uint8)) == "host array uint8 (2, 3)"


@pytest.mark.parametrize("kw,match", [
    ({"ptr": 0}, r"DeviceTensor.ptr: expected a device address > 0 \(int\), got 0"),
    ({"ptr": -4}, r"DeviceTensor.ptr: expected a device address > 0 \(int\), got -4"),
    ({"ptr": 12.0}, r"DeviceTensor.ptr: expected a device address > 0 \(int\), got 12.0"),
    ({"ptr": True}, r"DeviceTensor.ptr: expected a device address > 0 \(int\), got True"),
    ({"shape": (1, -2)}, r"DeviceTensor.shape: expected a tuple of integers >= 0, got \(1, -2\)"),
    ({"shape": (1, 2.5)}, r"DeviceTensor.shape: expected a tuple of integers >= 0, got \(1, 2.5\)"),
    ({"shape": 7}, r"DeviceTensor.shape: expected a tuple of integers >= 0, got 7"),
    ({"dtype": "floaty"}, r"DeviceTensor.dtype: expected a numpy dtype such as 'float32', "
                          r"got 'floaty'"),
    ({"dtype": object}, r"DeviceTensor.dtype: expected a fixed-size numeric dtype, got object"),
    ({"stream": -1}, r"DeviceTensor.stream: expected a stream handle >= 0 \(int; 0 = default "
                     r"stream\), got -1"),
])
def test_device_tensor_rejects_what_cannot_describe_device_memory(kw, match):
    args = {"ptr": 0x1000, "shape": (1, 2), "dtype": "float32", "stream": 0} | kw
    with pytest.raises(DataFormatError, match=match):
        DeviceTensor(**args)


def test_device_tensor_never_becomes_a_host_array_by_accident():
    t = DeviceTensor(0x1000, (1, 2), "float32")
    with pytest.raises(DataFormatError, match=r"DeviceTensor: device tensor float32 \(1, 2\) at "
                                              r"0x1000 lives in device memory"):
        np.asarray(t)


# ---- the runtime contract -----------------------------------------------------------------
def test_onnxruntime_takes_host_arrays_only(card):
    x = _input(card)
    with open_runtime("onnxruntime", card) as rt:
        assert rt.accepts_device_input is False
        y = rt.run(x)
        with pytest.raises(EngineError, match=r"input: runtime onnxruntime takes host arrays, "
                                              r"got a device tensor float32 \(1, 4, 8, 12\) at "
                                              r"0x[0-9a-f]+; ask the backend for host output"):
            rt.run(_view(x))
        with pytest.raises(EngineError, match=r"input: expected a numpy array or a DeviceTensor,"
                                              r" got list \(neither"):
            rt.run(x.tolist())
    assert y.shape == (1, len(card.output.classes), card.input.height, card.input.width)


def test_device_runtime_gets_the_tensor_and_matches_the_host_path(card):
    x = _input(card, seed=1)
    with open_runtime("onnxruntime", card) as host, PointerRuntime(card) as dev:
        ref = host.run(x)
        got = dev.run(_view(x, stream=5))
        assert dev.device_calls == 1
    np.testing.assert_array_equal(got, ref)


def test_device_runtime_checks_shape_and_dtype_before_running(card):
    x = _input(card, seed=2)
    spec = card.input
    with PointerRuntime(card) as rt:
        with pytest.raises(EngineError, match=r"input: expected shape \(1, 4, 8, 12\) for model "
                                              r".*, got \(1, 4, 12, 8\)"):
            rt.run(_view(x, shape=(1, spec.channels, spec.width, spec.height)))
        with pytest.raises(EngineError, match=r"input: expected dtype float32, got float16"):
            rt.run(_view(x, dtype="float16"))
        assert rt.device_calls == 0


def test_infer_stage_passes_what_the_chain_produced(card):
    x = _input(card, seed=3)
    spec = card.input
    cube = np.zeros((spec.height, spec.width, len(WL)), np.float32)
    with open_runtime("onnxruntime", card) as host:
        ref = host.run(x)
    rt = PointerRuntime(card).load()
    stage = InferStage(rt)
    frame = Frame(cube, np.asarray(WL), FrameMeta(frame_id=1))
    frame.products["input"] = _view(x)
    out = stage.process(frame)
    stage.close()
    np.testing.assert_array_equal(out.products["scores"], ref)
    assert rt.device_calls == 1


def test_auto_picks_onnxruntime_for_a_cpu_chain(card):
    assert open_runtime("auto", card, gpu_chain=False).name == "onnxruntime"
