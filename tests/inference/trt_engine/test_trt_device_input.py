"""The TensorRT runtime's two input paths, around the TensorRT API (fake_trt, fake_pycuda).

A host array is copied to the runtime's own input buffer and run on the runtime's stream; a
DeviceTensor is bound in place (its pointer is the engine's input address, no upload) and run
on the tensor's stream; both after the card checks.  Nothing here runs an engine
(tests/tensorrt_real does).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import edge.inference.tensorrt_build as tb
import edge.inference.tensorrt_runtime as tr
from edge.core.tensor import DeviceTensor
from edge.errors import EngineError
from edge.inference import load_model_card
from fake_pycuda import make_fake_cuda
from fake_trt import make_fake_trt
from onnx_models import write_pixel_classifier


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    cuda = make_fake_cuda()
    monkeypatch.setattr(tb, "_import_cuda", lambda: cuda)
    monkeypatch.setattr(tr, "_import_cuda", lambda: cuda)
    trt = make_fake_trt(10)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    card = load_model_card(write_pixel_classifier(tmp_path / "m", wavelengths=[500, 600, 700],
                                                  maps=("sto2",))[0])
    rt = tr.TensorRTRuntime(card, cache_dir=tmp_path / "c", progress=False)
    rt.load()
    trt.events.clear()
    cuda.events.clear()
    yield rt, trt, cuda
    rt.close()


def _calls(events, kind):
    return [e for e in events if isinstance(e, tuple) and e[0] == kind]


def test_device_tensor_is_bound_in_place_on_its_stream(runtime):
    rt, trt, cuda = runtime
    assert rt.accepts_device_input
    spec = rt.card.input
    t = DeviceTensor(0xD000_0000, (1, spec.channels, spec.height, spec.width), spec.dtype,
                     stream=0x77)
    y = rt.run(t)
    assert ("set_tensor_address", spec.name, 0xD000_0000) in trt.events
    assert _calls(trt.events, "execute_async_v3") == [("execute_async_v3", 0x77)]
    assert _calls(cuda.events, "htod") == []                 # the input is not uploaded
    assert _calls(cuda.events, "dtoh") == [("dtoh", rt.output_device_ptr, 0x5150)]
    assert y.dtype == np.float32 and y.shape[0] == 1


def test_host_array_is_uploaded_and_run_on_the_runtime_stream(runtime):
    rt, trt, cuda = runtime
    spec = rt.card.input
    x = np.zeros((1, spec.channels, spec.height, spec.width), spec.dtype)
    rt.run(x)
    (htod,) = _calls(cuda.events, "htod")
    assert ("set_tensor_address", spec.name, htod[1]) in trt.events
    assert _calls(trt.events, "execute_async_v3") == [("execute_async_v3", 0x5150)]


def test_wrong_device_tensor_is_refused_before_tensorrt_sees_it(runtime):
    rt, trt, cuda = runtime
    spec = rt.card.input
    with pytest.raises(EngineError, match=r"input: expected dtype float32, got float16"):
        rt.run(DeviceTensor(0xD000_0000, (1, spec.channels, spec.height, spec.width),
                            "float16"))
    with pytest.raises(EngineError, match=r"input: expected shape \(1, 4, 8, 12\) for model "
                                          r".*, got \(2, 4, 8, 12\)"):
        rt.run(DeviceTensor(0xD000_0000, (2, spec.channels, spec.height, spec.width),
                            spec.dtype))
    assert trt.events == [] and _calls(cuda.events, "htod") == []
