"""The few-shot classifiers of Finn et al. 2017 (arXiv 1703.03400, sec. 5.2), as plain modules.

Both return logits ``[B, ways]`` and run unchanged under ``torch.func.functional_call``
and ``torch.func.vmap`` (so :func:`metarl.maml.adapt_batched` adapts a meta-batch of
tasks in one call; for convolutions vmap over per-task weights becomes a grouped
convolution).

Batch normalisation (Ioffe & Szegedy 2015, arXiv 1502.03167) always normalises with the
statistics of the batch it is given, during adaptation and on the query set, at training
and at test time, as in the paper's reference code (which never switched batch norm to
inference mode): ``track_running_stats=False``, so there are no running-statistics
buffers to update inside the inner loop or to leak across tasks, and ``.eval()`` changes
nothing. Consequence: a prediction depends on the other examples of its batch (the
support set when adapting, the query set when evaluating), which is the transductive
setting the paper's numbers use. A per-channel scale and shift are learned; the
reference code learned the shift only (TensorFlow's ``batch_norm`` default).

Why :class:`BatchNorm` and not ``nn.BatchNorm2d(affine=True, track_running_stats=False)``:
in torch 2.13 the second-order gradient through the fused ``batch_norm`` with an affine
weight is wrong under ``vmap`` (meta-gradients off by 1-3% relative, in float64 too, while
the per-task loop is right; cf. pytorch/functorch#534 on batch norm's batching rules).
Normalising with the fused op without affine parameters and applying the scale and shift
as separate elementwise ops is exact under ``vmap``, per-task ``adapt`` and second order;
``tests/test_fewshot_models.py`` checks it.

MAML++ (Antoniou et al. 2019, arXiv 1810.09502 sec. 4, "BNWB"/"BNRS"): with ``bn_steps=S``
each batch norm holds a table of scales and shifts ``[S+1, C]``, row k for the params after
k inner steps, which :func:`step_view` selects inside :func:`metarl.maml.adapt_path`; they are
meta-learned and not adapted (the MAML++ code's default). Its per-step running statistics
have no counterpart here: normalisation always uses the batch's own statistics, which are
those of the current step already; MAML++'s code also normalises with ``training=True``
throughout, so its running statistics never reach an output either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metarl.maml import LossFn, Params, StepView, functional_forward


class BatchNorm(nn.Module):
    """Batch normalisation with batch statistics only, then a learned per-channel scale and shift.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, mean and (biased) variance over
    every dim but dim 1 of this batch (``[B, C]`` or ``[B, C, H, W]``), at training and at
    test time. No buffers. Same parameter names and maths as ``nn.BatchNorm{1,2}d(n,
    track_running_stats=False)``; see the module docstring for why it is separate.

    ``steps=S > 0``: per-step tables ``weight, bias [S+1, C]`` (MAML++); :func:`step_view`
    hands the layer row k at inner step k, and a forward pass outside it uses row 0.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, steps: int = 0) -> None:
        super().__init__()
        self.eps = eps
        shape = (steps + 1, num_features) if steps > 0 else (num_features,)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x.dim() - 2)
        weight, bias = (self.weight, self.bias) if self.weight.dim() == 1 else (self.weight[0], self.bias[0])
        y = F.batch_norm(x, None, None, training=True, eps=self.eps)
        return y * weight.view(shape) + bias.view(shape)


def step_tables(module: nn.Module) -> list[str]:
    """Names of the per-step batch-norm tables ``[S+1, C]`` of ``module`` (empty without them)."""
    return [f"{name}.{p}" for name, m in module.named_modules()
            if isinstance(m, BatchNorm) and m.weight.dim() == 2 for p in ("weight", "bias")]


def step_view(tables: Sequence[str]) -> StepView:
    """``(params, k) -> params`` with each table of ``tables`` replaced by its row ``min(k, S)``
    (an entry already a row ``[C]`` stays): the batch-norm weights of inner step k (MAML++ BNWB)."""

    def view(params: Params, k: int) -> Params:
        rows = {n: params[n][min(k, params[n].shape[0] - 1)] for n in tables if params[n].dim() == 2}
        return {**params, **rows}

    return view


class Conv4(nn.Module):
    """The paper's convolutional classifier: 4 blocks, then a linear head to ``ways`` logits.

    Block = 3x3 conv (``filters`` channels, padding 1) -> batch norm -> ReLU, downsampling
    by 2 each block, either

    - ``downsample="stride"``: the conv has stride 2 (the paper's Omniglot net; 28 -> 14
      -> 7 -> 4 -> 2), and the head sees the spatial mean of the last feature map
      (``[B, filters]``), as the reference code does; or
    - ``downsample="maxpool"``: stride-1 conv followed by a 2x2 max pool (the paper's
      MiniImagenet net; 84 -> 42 -> 21 -> 10 -> 5), and the head sees the flattened map
      (``[B, filters * 5 * 5]`` = 800 for 32 filters).

    The paper uses 64 filters for Omniglot and 32 for MiniImagenet (to limit overfitting).

    Shapes: ``x [B, in_channels, image_size, image_size]`` -> logits ``[B, ways]``.
    """

    def __init__(
        self,
        in_channels: int,
        ways: int,
        *,
        filters: int = 64,
        downsample: str = "stride",
        image_size: int = 28,
        blocks: int = 4,
        bn_steps: int = 0,
    ) -> None:
        super().__init__()
        if downsample not in ("stride", "maxpool"):
            raise ValueError(f"downsample={downsample!r}; expected 'stride' or 'maxpool'")
        self.downsample = downsample
        layers: list[nn.Module] = []
        side = image_size
        for i in range(blocks):
            stride = 2 if downsample == "stride" else 1
            layers += [
                nn.Conv2d(in_channels if i == 0 else filters, filters, 3, stride=stride, padding=1),
                BatchNorm(filters, steps=bn_steps),
                nn.ReLU(),
            ]
            if downsample == "maxpool":
                layers.append(nn.MaxPool2d(2))
                side //= 2
            else:
                side = (side - 1) // 2 + 1
            if side < 1:
                raise ValueError(f"image_size={image_size} is too small for {blocks} downsampling blocks")
        self.features = nn.Sequential(*layers)
        features = filters if downsample == "stride" else filters * side * side
        self.head = nn.Linear(features, ways)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        h = h.mean(dim=(-2, -1)) if self.downsample == "stride" else h.flatten(1)
        return self.head(h)


class FCNet(nn.Module):
    """The paper's fully connected classifier (Finn et al. 2017 sec. 5.2, after Santoro et al.
    2016): hidden layers 256-128-64-64, each linear -> batch norm -> ReLU, then a linear
    head to ``ways`` logits.

    Shapes: ``x [B, *x_shape]`` (flattened to ``[B, in_features]``) -> logits ``[B, ways]``.
    """

    def __init__(self, in_features: int, ways: int, hidden: Sequence[int] = (256, 128, 64, 64),
                 bn_steps: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), BatchNorm(h, steps=bn_steps), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, ways)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.flatten(1)))


def build_classifier(
    kind: str,
    x_shape: Sequence[int],
    ways: int,
    *,
    filters: int = 64,
    downsample: str = "stride",
    bn_steps: int = 0,
) -> nn.Module:
    """A classifier for inputs ``[B, *x_shape]`` (``x_shape = (channels, side, side)``).

    ``kind="conv4"`` -> :class:`Conv4`; ``kind="fc"`` -> :class:`FCNet` (its hidden sizes are
    the paper's; ``filters``/``downsample`` are ignored). ``bn_steps > 0``: per-step batch-norm
    tables for that many inner steps (MAML++, see :class:`BatchNorm`).
    """
    channels, height, width = (int(s) for s in x_shape)
    if kind == "conv4":
        if height != width:
            raise ValueError(f"Conv4 expects square images, got {height}x{width}")
        return Conv4(channels, ways, filters=filters, downsample=downsample, image_size=height, bn_steps=bn_steps)
    if kind == "fc":
        return FCNet(channels * height * width, ways, bn_steps=bn_steps)
    raise ValueError(f"unknown classifier kind {kind!r}; expected 'conv4' or 'fc'")


def cross_entropy_loss(module: nn.Module) -> LossFn:
    """``loss(params, (x [B, ...], y [B] int64)) -> mean cross-entropy`` for :func:`metarl.maml.adapt`.

    The paper's classification loss (sec. 3.2, eq. (3)). Runs ``module`` through
    :func:`~metarl.maml.functional_forward`, so it composes with ``vmap`` over tasks.
    """

    def loss(params: dict[str, torch.Tensor], data: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = data
        return F.cross_entropy(functional_forward(module, params, x), y)

    return loss


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of ``argmax(logits, -1) == y``, averaged over all leading dims; a scalar tensor."""
    return (logits.argmax(dim=-1) == y).float().mean()
