"""The scan triage CNN: one fully convolutional network, four heads.

The network reads a preprocessed scan (``[C, H, W]`` log-attenuation, fixed height, any
width that is a multiple of 32; see :mod:`scanvision.preprocess`) and returns

* ``heatmap_logits`` ``[B, 1, H/16, W/16]``: per cell, "this cell contains a concealment";
* ``score`` ``[B]``: the image concealment probability, a top-k mean of the heatmap logits
  followed by a learned affine map and a calibration (Platt) map, then a sigmoid;
* ``empty_prob`` ``[B]``: probability that the container is empty;
* ``class_logits`` ``[B, n_classes]``: the cargo family.

Scans of different widths share a batch by padding with zero attenuation (air); the second
input ``width`` (``[B]`` int64, the real width of each scan in pixels) masks the padded
columns out of the pooled heads, so a scan gets the same score alone or in a padded batch up
to the small border effect of the convolutions.

Models are built through :func:`create_model` over a registry, in the manner of timm::

    >>> model = create_model("triage_mnv3s_075", in_channels=1)
    >>> heatmap, score, empty, classes = model(torch.zeros(2, 1, 192, 640))

The backbone is torchvision's MobileNetV3-small, always built with ``weights=None``: nothing is
downloaded, every model is trained from the project's own generated scans.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import mobilenet_v3_small
from torchvision.ops.misc import Conv2dNormActivation, SqueezeExcitation

from riskengine.commodities import CARGO_FAMILIES

logger = logging.getLogger(__name__)

#: Cargo families shared with the manifest side (exact strings, fixed order = class index).
CARGO_CLASSES: tuple[str, ...] = CARGO_FAMILIES

#: ONNX input / output names; the inference side reads them from the sidecar.
INPUT_NAMES: tuple[str, ...] = ("image", "width")
OUTPUT_NAMES: tuple[str, ...] = ("heatmap_logits", "score", "empty_prob", "class_logits")

# The backbone's stride-16 stage ends after block 8 of MobileNetV3-small's `features`.
_MNV3S_STRIDE16_BLOCKS = 9


@dataclass(frozen=True)
class ModelSpec:
    """Architecture hyper-parameters of one registered model.

    Attributes:
        backbone: torchvision backbone name (only ``mobilenet_v3_small`` so far).
        width_mult: channel multiplier of the backbone (1.0 = the published network).
        head_channels: channels of the heatmap head (feature pyramid width).
        class_hidden: hidden units of the pooled empty / cargo-class head.
        topk: number of heatmap cells averaged for the image score.
        dropout: dropout before the pooled heads (training only).
        heatmap_stride: input pixels per heatmap cell (fixed by the architecture: 16).
        squeeze_excitation: keep MobileNetV3's squeeze-and-excitation blocks. Off by default:
            their global pooling would let the air padding of a mixed-width batch (and the
            scan's width) change every cell; without them the network is purely local.
    """

    backbone: str = "mobilenet_v3_small"
    width_mult: float = 0.75
    head_channels: int = 64
    class_hidden: int = 128
    topk: int = 2
    dropout: float = 0.2
    heatmap_stride: int = 16
    squeeze_excitation: bool = False


_REGISTRY: dict[str, ModelSpec] = {
    "triage_mnv3s_100": ModelSpec(width_mult=1.0, head_channels=64),
    "triage_mnv3s_075": ModelSpec(width_mult=0.75, head_channels=64),
    "triage_mnv3s_050": ModelSpec(width_mult=0.5, head_channels=48),
    # For tests and smoke runs: a few thousand parameters, trains in seconds.
    "triage_tiny": ModelSpec(width_mult=0.25, head_channels=16, class_hidden=32),
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_REGISTRY)


def register_model(name: str, spec: ModelSpec) -> None:
    """Add an architecture to the registry (raises if ``name`` is already taken)."""
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is already registered; choose another name")
    _REGISTRY[name] = spec


def model_spec(name: str, **overrides: Any) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name`` with ``overrides`` applied."""
    if name not in _REGISTRY:
        raise KeyError(
            f"unknown scan model {name!r}; valid names: {', '.join(list_models())}"
        )
    spec = _REGISTRY[name]
    unknown = sorted(set(overrides) - set(asdict(spec)))
    if unknown:
        raise TypeError(
            f"unknown override(s) {unknown} for scan model {name!r}; "
            f"valid: {sorted(asdict(spec))}"
        )
    return replace(spec, **overrides)


def create_model(
    name: str,
    *,
    in_channels: int = 1,
    num_classes: int = len(CARGO_CLASSES),
    **overrides: Any,
) -> ScanTriageNet:
    """Build a registered scan triage network with freshly initialised weights.

    Args:
        name: a registered name (see :func:`list_models`).
        in_channels: 1 for single-energy scans, 2 for dual-energy pairs.
        num_classes: number of cargo classes (default: the 9 :data:`CARGO_CLASSES`).
        **overrides: fields of :class:`ModelSpec` to change, e.g. ``topk=4``.

    Raises:
        KeyError: ``name`` is not registered (the message lists the valid names).
    """
    spec = model_spec(name, **overrides)
    if in_channels not in (1, 2):
        raise ValueError(
            f"in_channels must be 1 (single energy) or 2 (dual energy), got {in_channels}"
        )
    return ScanTriageNet(spec, in_channels=in_channels, num_classes=num_classes)


def column_mask(width: torch.Tensor, n_cols: int | torch.Tensor, stride: int) -> torch.Tensor:
    """Boolean ``[B, n_cols]``: which feature columns lie inside each scan's real width.

    A column is valid when its first input pixel lies inside the scan (``ceil(width/stride)``
    columns), so a partly covered last column still counts.
    """
    cols = torch.arange(n_cols, device=width.device)
    valid = torch.div(width + (stride - 1), stride, rounding_mode="floor")
    return cols.unsqueeze(0) < valid.unsqueeze(1)


class ScanTriageNet(nn.Module):
    """MobileNetV3-small features + a stride-16 heatmap head + pooled empty/class heads.

    Use :func:`create_model` rather than this class directly.
    """

    def __init__(self, spec: ModelSpec, *, in_channels: int = 1, num_classes: int = 9) -> None:
        super().__init__()
        if spec.backbone != "mobilenet_v3_small":
            raise ValueError(
                f"unsupported backbone {spec.backbone!r}; only 'mobilenet_v3_small' is implemented"
            )
        if spec.heatmap_stride != 16:
            raise ValueError(f"heatmap_stride is fixed at 16 by the backbone, got {spec.heatmap_stride}")
        self.spec = spec
        self.in_channels = in_channels
        self.num_classes = num_classes

        features = mobilenet_v3_small(weights=None, width_mult=spec.width_mult).features
        for m in features.modules():
            if isinstance(m, nn.BatchNorm2d):
                # torchvision's 0.01 suits ImageNet-length schedules; a few thousand steps from
                # scratch need running statistics that keep up with the weights.
                m.momentum = 0.1
        if not spec.squeeze_excitation:
            _drop_squeeze_excitation(features)
        stem: nn.Conv2d = features[0][0]
        features[0][0] = nn.Conv2d(
            in_channels, stem.out_channels, kernel_size=stem.kernel_size, stride=stem.stride,
            padding=stem.padding, bias=False,
        )
        self.stage16 = features[:_MNV3S_STRIDE16_BLOCKS]
        self.stage32 = features[_MNV3S_STRIDE16_BLOCKS:]
        c16 = features[_MNV3S_STRIDE16_BLOCKS - 1].out_channels
        c32 = features[-1].out_channels
        hc = spec.head_channels

        self.lateral16 = Conv2dNormActivation(c16, hc, kernel_size=1, activation_layer=None)
        self.lateral32 = Conv2dNormActivation(c32, hc, kernel_size=1, activation_layer=None)
        self.heat_mix = nn.Sequential(
            Conv2dNormActivation(hc, hc, kernel_size=3, groups=hc, activation_layer=nn.Hardswish),
            Conv2dNormActivation(hc, hc, kernel_size=1, activation_layer=nn.Hardswish),
        )
        self.heat_out = nn.Conv2d(hc, 1, kernel_size=1)
        # Start at a 1 % per-cell prior: most cells are background, a balanced start wastes epochs.
        nn.init.constant_(self.heat_out.bias, -math.log(99.0))

        # Learned affine map of the top-k pooled logit (trained by the image-level loss).
        self.pool_scale = nn.Parameter(torch.tensor(1.0))
        self.pool_bias = nn.Parameter(torch.tensor(0.0))
        # Post-hoc Platt calibration of the image score (fitted on validation scans).
        self.register_buffer("calib_scale", torch.tensor(1.0))
        self.register_buffer("calib_bias", torch.tensor(0.0))

        self.pooled = nn.Sequential(
            nn.Linear(c32, spec.class_hidden), nn.Hardswish(), nn.Dropout(spec.dropout)
        )
        self.empty_out = nn.Linear(spec.class_hidden, 1)
        self.class_out = nn.Linear(spec.class_hidden, num_classes)

    def forward_train(
        self, image: torch.Tensor, width: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """All raw logits (for the losses): heatmap, image score (uncalibrated), empty, class.

        Also returns ``heat_mask`` ``[B, 1, h, w]``: the heatmap cells inside each real width.
        """
        if width is None:
            width = torch.full(
                (image.shape[0],), image.shape[-1], dtype=torch.int64, device=image.device
            )
        f16 = self.stage16(image)
        f32 = self.stage32(f16)
        top = F.interpolate(self.lateral32(f32), scale_factor=2.0, mode="nearest")
        heat = self.heat_out(self.heat_mix(self.lateral16(f16) + top))

        mask16 = column_mask(width, heat.shape[-1], 16)[:, None, None, :]
        heat_mask = mask16.expand_as(heat)
        masked = heat.masked_fill(~heat_mask, -1.0e4).flatten(1)
        topk = torch.topk(masked, self.spec.topk, dim=1).values.mean(dim=1)
        score_logit = self.pool_scale * topk + self.pool_bias

        mask32 = column_mask(width, f32.shape[-1], 32)[:, None, None, :].to(f32.dtype)
        denom = mask32.sum(dim=(2, 3)) * f32.shape[-2]
        pooled = self.pooled((f32 * mask32).sum(dim=(2, 3)) / denom)
        return {
            "heatmap_logits": heat,
            "heat_mask": heat_mask,
            "score_logit": score_logit,
            "empty_logit": self.empty_out(pooled).squeeze(1),
            "class_logits": self.class_out(pooled),
        }

    def forward(
        self, image: torch.Tensor, width: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Serving outputs: ``(heatmap_logits, score, empty_prob, class_logits)``."""
        out = self.forward_train(image, width)
        score = torch.sigmoid(self.calib_scale * out["score_logit"] + self.calib_bias)
        return out["heatmap_logits"], score, torch.sigmoid(out["empty_logit"]), out["class_logits"]

    def set_score_calibration(self, scale: float, bias: float) -> None:
        """Set the Platt map applied to the pooled score logit before the sigmoid."""
        self.calib_scale.fill_(float(scale))
        self.calib_bias.fill_(float(bias))


def _drop_squeeze_excitation(module: nn.Module) -> None:
    """Replace every squeeze-and-excitation block under ``module`` by an identity."""
    for name, child in module.named_children():
        if isinstance(child, SqueezeExcitation):
            setattr(module, name, nn.Identity())
        else:
            _drop_squeeze_excitation(child)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
