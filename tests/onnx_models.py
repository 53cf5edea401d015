"""Small real ONNX graphs for tests, built with ``onnx.helper`` (no training, no download).

``write_pixel_classifier`` writes a per-pixel linear classifier (a 1×1 Conv, C -> K) plus its
model card; its output is known in closed form, so runtimes and the pipeline can be checked
against ``numpy.einsum``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

CARD_FORMAT = "hsi-edge-model-card/1"


def conv1x1_model(weights: np.ndarray, bias: np.ndarray, *, height, width,
                  dtype: str = "float32", in_name: str = "input", out_name: str = "logits",
                  opset: int = 17, nan_output: bool = False):
    """Return an ``onnx.ModelProto``: logits = Conv1x1(input) with the given (K, C) weights.

    ``nan_output`` appends ``Sqrt(-(|y| + 1))`` so every output is NaN (a broken model).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, c = weights.shape
    et = TensorProto.FLOAT16 if dtype == "float16" else TensorProto.FLOAT
    np_dt = np.float16 if dtype == "float16" else np.float32
    w = numpy_helper.from_array(weights.reshape(k, c, 1, 1).astype(np_dt), "W")
    b = numpy_helper.from_array(bias.astype(np_dt), "B")
    conv_out = "conv" if nan_output else out_name
    nodes = [helper.make_node("Conv", [in_name, "W", "B"], [conv_out], kernel_shape=[1, 1])]
    if nan_output:
        one = numpy_helper.from_array(np.ones(1, np_dt), "one")
        nodes += [helper.make_node("Abs", ["conv"], ["abs"]),
                  helper.make_node("Add", ["abs", "one"], ["pos"]),
                  helper.make_node("Neg", ["pos"], ["neg"]),
                  helper.make_node("Sqrt", ["neg"], [out_name])]
    graph = helper.make_graph(
        nodes, "pixel_classifier",
        [helper.make_tensor_value_info(in_name, et, [1, c, height, width])],
        [helper.make_tensor_value_info(out_name, et, [1, k, height, width])],
        initializer=[w, b] + ([one] if nan_output else []))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_pixel_classifier(directory: Path, *, wavelengths=None, maps=(), classes=3,
                           height=8, width=12, dtype="float32", seed=0, card_overrides=None,
                           model_channels=None, nan_output=False):
    """Write ``model.onnx`` and ``card.yaml`` into ``directory``; return (card_path, W, b).

    ``model_channels`` builds a model with a different channel count than the card promises
    (to test mismatch detection).
    """
    import onnx

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n_spec = 0 if wavelengths is None else len(wavelengths)
    c = n_spec + len(maps)
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(classes, model_channels or c)).astype(np.float32)
    bias = rng.normal(size=classes).astype(np.float32)
    model = conv1x1_model(weights, bias, height=height, width=width, dtype=dtype,
                          nan_output=nan_output)
    onnx.save(model, directory / "model.onnx")
    card = {
        "format": CARD_FORMAT,
        "name": "test-pixel-classifier",
        "onnx": "model.onnx",
        "input": {"name": "input", "height": height, "width": width, "dtype": dtype,
                  "maps": list(maps)},
        "output": {"name": "logits", "kind": "logits",
                   "classes": [{"id": i, "name": f"class{i}", "color": [40 * i, 255 - 40 * i, 90]}
                               for i in range(classes)]},
    }
    if wavelengths is not None:
        card["input"]["spectra"] = {"wavelengths_nm": [float(w) for w in wavelengths]}
    for key, value in (card_overrides or {}).items():
        card[key] = value
    (directory / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return directory / "card.yaml", weights, bias
