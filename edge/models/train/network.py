"""The demo segmentation network: a per-pixel MLP with a two-level context path (tiny U-Net).

Why this shape: on simulated (and real) tissue most of the class information is in each
pixel's spectrum and physiology; spatial context mainly averages sensor noise and texture.
So the only full-resolution layer is a per-pixel 1x1 convolution, 3x3 convolutions run at
1/2 and 1/4 resolution, and the logits are computed at 1/2 resolution and bilinearly
upsampled (7 channels are cheap to resize; 16+ feature channels are not).  About 2.5 k
multiply-adds per pixel, ~0.8 GMAC for a 480x640 frame: interactive on a 2-core CPU with
ONNX Runtime (see the model card for the measured latency).

Input standardisation (per-channel mean/std measured on the training set) is part of the
network as fixed buffers, so the ONNX file takes the packed input exactly as the backend
produces it (the card has no normalisation fields).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DemoSegNet"]


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DemoSegNet(nn.Module):
    """Tiny U-Net for per-pixel tissue classes.

    Parameters
    ----------
    in_channels : int
        Packed input channels (L1 bands + maps).
    classes : int
        Output classes (logits).
    mean, std : tensor of shape (in_channels,)
        Input standardisation, baked into the graph.
    width : int
        Base channel width.

    Shapes: input (N, in_channels, H, W) float32 -> logits (N, classes, H, W) float32; any
    H, W >= 4 (skips are resized to match, so odd sizes such as 217 x 409 work).
    """

    def __init__(self, in_channels: int, classes: int, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None, width: int = 16):
        super().__init__()
        mean = torch.zeros(in_channels) if mean is None else torch.as_tensor(mean).float()
        std = torch.ones(in_channels) if std is None else torch.as_tensor(std).float()
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).clone())
        self.register_buffer("inv_std", (1.0 / std.clamp_min(1e-6)).reshape(1, -1, 1, 1))
        w = width
        self.stem = _conv(in_channels, w, 1)                       # full resolution
        self.down1 = nn.Sequential(_conv(w, 2 * w, 3, stride=2), _conv(2 * w, 2 * w, 1))
        self.down2 = nn.Sequential(_conv(2 * w, 2 * w, 3, stride=2), _conv(2 * w, 2 * w, 3))
        self.up1 = _conv(4 * w, 2 * w, 1)
        self.head = nn.Conv2d(2 * w, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = (x - self.mean) * self.inv_std
        s1 = self.down1(self.stem(x))
        s2 = self.down2(s1)
        u1 = F.interpolate(s2, size=s1.shape[-2:], mode="nearest")
        u1 = self.up1(torch.cat([u1, s1], dim=1))
        return F.interpolate(self.head(u1), size=size, mode="bilinear", align_corners=False)
