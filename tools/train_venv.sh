#!/usr/bin/env bash
# Create the training venv (.venv-train, git-ignored) for `hsi-edge train-demo` and
# `hsi-edge model export-htc`.
#
# PyTorch is pinned on purpose: an unpinned `pip install torch` pulls a multi-GB CUDA build
# and a torch version the exported ONNX graphs were not checked with. The CPU training and the
# htc export use the same pins as the `train` extra in pyproject.toml.
#
# segmentation-models-pytorch (smp) is installed with --no-deps so that it cannot replace
# the pinned torch; its pure-Python dependencies are listed explicitly below.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-train}"
PY="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/pip"

"$PIP" install torch==2.14.1 torchvision==0.29.1
"$PIP" install -e '.[test]'
# smp without its deps (it would otherwise be free to resolve another torch).
"$PIP" install --no-deps segmentation-models-pytorch
"$PIP" install timm huggingface_hub safetensors pillow tqdm
# Refuse a venv whose torch moved away from the pin.
"$VENV/bin/python" - <<'PY'
import torch, torchvision, segmentation_models_pytorch as smp
assert torch.__version__.split("+")[0] == "2.14.1", torch.__version__
print("torch", torch.__version__, "torchvision", torchvision.__version__, "smp", smp.__version__)
PY
