"""U2-Net and U2-Net† (``u2netp``) built from one stage table and one RSU block.

The official implementation spells out five near-identical residual U-blocks
(RSU7, RSU6, RSU5, RSU4, RSU4F). They differ only in their height and in whether
they go down by pooling or by dilation, so one class parametrised by those two
numbers covers all of them. Module names are chosen so that ``state_dict`` keys
and shapes match the official checkpoints exactly (``tests/data/*.tsv``): a user's
``u2netp.pth`` or ``u2net.pth`` loads as is.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidmat.model.spec import ARCHITECTURES


def _upsample_like(src: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(src, size=like.shape[2:], mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Module):
    """The official ``REBNCONV``: 3x3 conv (dilated) + batch norm + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.bn_s1: nn.Module = nn.BatchNorm2d(out_ch)  # an Identity once folded
        self.relu_s1 = nn.ReLU(inplace=True)
        #: Set by :func:`fold_batch_norms`: the batch norm is in the convolution, and on
        #: a CPU oneDNN applies the ReLU as the convolution writes its output.
        self.folded = False

    def forward(self, x: Tensor) -> Tensor:
        fusable = x.device.type == "cpu" and x.dtype in onednn_fused_dtypes()
        if self.folded and fusable and not torch.is_grad_enabled():  # no autograd for it
            return _conv_relu(x, self.conv_s1)
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


@functools.cache
def onednn_fused_dtypes() -> tuple[torch.dtype, ...]:
    """Input dtypes oneDNN's fused convolution takes on this CPU: fp32, and bf16 where
    oneDNN has a bf16 path (AVX-512 BW/VL/DQ or AVX-NE-CONVERT; elsewhere it refuses
    bf16, while the plain convolution emulates it, slower, for an explicit --precision
    bf16). ``ONEDNN_MAX_CPU_ISA=AVX2`` makes this CPU one without."""
    if not _onednn_fuses():
        return ()
    bf16 = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return (torch.float32, torch.bfloat16) if bf16 is not None and bf16() else (torch.float32,)


def _conv_relu(x: Tensor, c: nn.Conv2d) -> Tensor:
    """relu(c(x)) in one pass: oneDNN's ReLU post-op, the same numbers as the two calls
    (compared exactly), without a second sweep over the activations. The ReLUs were
    13 % of u2netp's time on a CPU (bf16, 256 px)."""
    return torch.ops.mkldnn._convolution_pointwise(
        x, c.weight, c.bias, list(c.padding), list(c.stride), list(c.dilation), c.groups,
        "relu", [], "",
    )  # fmt: skip


class RSU(nn.Module):
    """Residual U-block of a given height.

    ``dilated=False`` (RSU-7/6/5/4): the encoder halves the resolution between
    levels and the decoder upsamples back; the top level uses dilation 2.
    ``dilated=True`` (RSU-4F): resolution stays fixed and dilation doubles per
    level instead (1, 2, 4, ... and 2**(height-1) at the top), which is how the
    deepest stages keep context without shrinking tiny feature maps further.
    """

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int, dilated: bool) -> None:
        super().__init__()
        if height < 2:
            raise ValueError("RSU height must be at least 2")
        self.height = height
        self.dilated = dilated
        levels = height - 1
        self.dilations = [2**i if dilated else 1 for i in range(levels)]
        top_dilation = 2**levels if dilated else 2

        self.rebnconvin = ConvBNReLU(in_ch, out_ch)
        for i in range(1, levels + 1):
            self.add_module(
                f"rebnconv{i}",
                ConvBNReLU(out_ch if i == 1 else mid_ch, mid_ch, self.dilations[i - 1]),
            )
        self.add_module(f"rebnconv{height}", ConvBNReLU(mid_ch, mid_ch, top_dilation))
        for i in range(levels, 0, -1):
            self.add_module(
                f"rebnconv{i}d",
                ConvBNReLU(mid_ch * 2, out_ch if i == 1 else mid_ch, self.dilations[i - 1]),
            )
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)

    def forward(self, x: Tensor) -> Tensor:
        hx_in = self.rebnconvin(x)
        feats: list[Tensor] = []
        h = hx_in
        for i in range(1, self.height):
            if i > 1 and not self.dilated:
                h = self.pool(h)
            h = getattr(self, f"rebnconv{i}")(h)
            feats.append(h)
        d = getattr(self, f"rebnconv{self.height}")(feats[-1])
        for i in range(self.height - 1, 0, -1):
            d = getattr(self, f"rebnconv{i}d")(torch.cat((d, feats[i - 1]), 1))
            if i > 1 and not self.dilated:
                d = _upsample_like(d, feats[i - 2])
        if torch.is_grad_enabled():
            return d + hx_in
        return d.add_(hx_in)  # inference: into the last stage's own output, no new tensor


@dataclass(frozen=True)
class StageSpec:
    """One row of the stage table: an RSU block and the channels around it."""

    name: str
    height: int
    in_ch: int
    mid_ch: int
    out_ch: int
    dilated: bool = False


def _stage_table(arch: str) -> tuple[list[StageSpec], list[StageSpec], list[int]]:
    """Encoder stages, decoder stages (deepest first) and side-output input channels."""
    if arch == "u2netp":
        enc = [
            StageSpec("stage1", 7, 3, 16, 64),
            StageSpec("stage2", 6, 64, 16, 64),
            StageSpec("stage3", 5, 64, 16, 64),
            StageSpec("stage4", 4, 64, 16, 64),
            StageSpec("stage5", 4, 64, 16, 64, dilated=True),
            StageSpec("stage6", 4, 64, 16, 64, dilated=True),
        ]
        dec = [
            StageSpec("stage5d", 4, 128, 16, 64, dilated=True),
            StageSpec("stage4d", 4, 128, 16, 64),
            StageSpec("stage3d", 5, 128, 16, 64),
            StageSpec("stage2d", 6, 128, 16, 64),
            StageSpec("stage1d", 7, 128, 16, 64),
        ]
        sides = [64, 64, 64, 64, 64, 64]
    elif arch == "u2net":
        enc = [
            StageSpec("stage1", 7, 3, 32, 64),
            StageSpec("stage2", 6, 64, 32, 128),
            StageSpec("stage3", 5, 128, 64, 256),
            StageSpec("stage4", 4, 256, 128, 512),
            StageSpec("stage5", 4, 512, 256, 512, dilated=True),
            StageSpec("stage6", 4, 512, 256, 512, dilated=True),
        ]
        dec = [
            StageSpec("stage5d", 4, 1024, 256, 512, dilated=True),
            StageSpec("stage4d", 4, 1024, 128, 256),
            StageSpec("stage3d", 5, 512, 64, 128),
            StageSpec("stage2d", 6, 256, 32, 64),
            StageSpec("stage1d", 7, 128, 16, 64),
        ]
        sides = [64, 64, 128, 256, 512, 512]
    else:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")
    return enc, dec, sides


#: First words of the tensor names of an output head: the side convolutions and the fusion.
HEAD_LAYERS = (*(f"side{i}" for i in range(1, 7)), "outconv")


class OutputHead(nn.Module):
    """Side convolutions and fusion fitted for one input size, kept beside the model's own.

    Everything after the decoder is linear, and the side convolutions that best read the
    decoder at 320 px are not the ones that do at 192: one set fitted to serve both gave
    up a little at 192 every time (TRAINING_HISTORY, sessions 46 and 53). A file can carry
    a head per size; ``U2Net.forward`` picks by the input's side, so every caller (engine,
    evaluation, benchmarks) gets the one fitted nearest its size.
    """

    def __init__(self, source: nn.Module) -> None:
        """A copy of ``source``'s head layers (a U2Net's own or another OutputHead)."""
        super().__init__()
        for name in HEAD_LAYERS:
            self.add_module(name, copy.deepcopy(getattr(source, name)))


class U2Net(nn.Module):
    """Two-level nested U-structure for salient object / person segmentation.

    ``forward`` in eval mode returns the fused probability map (N, 1, H, W) in
    [0, 1]; in training mode, and whenever :meth:`forward_all` is called, the
    seven logit maps (fused first, then side outputs 1..6) are available for
    deep supervision. No per-image min-max stretch is applied: on video it turns
    the noise of person-free frames into a full-range mask.
    """

    def __init__(self, arch: str = "u2netp", out_ch: int = 1) -> None:
        super().__init__()
        enc, dec, sides = _stage_table(arch)
        self.arch = arch
        self._enc_names = [s.name for s in enc]
        self._dec_names = [s.name for s in dec]
        for s in (*enc, *dec):
            self.add_module(s.name, RSU(s.height, s.in_ch, s.mid_ch, s.out_ch, s.dilated))
        for i, ch in enumerate(sides, start=1):
            self.add_module(f"side{i}", nn.Conv2d(ch, out_ch, 3, padding=1))
        self.outconv = nn.Conv2d(6 * out_ch, out_ch, 1)
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        #: Input side the model's own side convolutions and fusion serve (the file's spec
        #: ``input_size``; the loader sets it). Heads in ``sized_heads`` serve the sides
        #: nearer their own size; see :meth:`head_for`.
        self.head_size = 320
        self.sized_heads = nn.ModuleDict()

    def add_sized_head(self, size: int) -> OutputHead:
        """A head for inputs of side ``size``, starting as a copy of the model's own."""
        head = OutputHead(self)
        self.sized_heads[str(int(size))] = head
        return head

    def head_for(self, side: int) -> nn.Module:
        """The module whose ``side1..side6`` and ``outconv`` serve inputs of this side.

        The nearest of the model's own size (``head_size``) and the sized heads' wins; a
        sized head wins a tie, so a head fitted at exactly the file's own size is used there.
        """
        best: nn.Module = self
        gap = abs(side - self.head_size)
        for key, head in self.sized_heads.items():
            if abs(side - int(key)) <= gap:
                best, gap = head, abs(side - int(key))
        return best

    def side_inputs(self, x: Tensor) -> list[Tensor]:
        """The six decoder features the side convolutions read, side 1's (full size) first.

        Exposed because everything after them is linear (3x3 side convs, bilinear
        upsampling, the 1x1 fusion): ``vidmat.train.head`` refits those layers on
        these features with the rest of the model frozen.
        """
        enc_feats: list[Tensor] = []
        h = x
        for i, name in enumerate(self._enc_names):
            if i > 0:
                h = self.pool(h)
            h = getattr(self, name)(h)
            enc_feats.append(h)

        # Decoder: deepest first. Each stage sees the upsampled output of the one
        # below it concatenated with the encoder feature of its own level.
        dec_feats: list[Tensor] = [enc_feats[-1]]
        d = enc_feats[-1]
        for j, name in enumerate(self._dec_names):
            skip = enc_feats[-2 - j]
            d = getattr(self, name)(torch.cat((_upsample_like(d, skip), skip), 1))
            dec_feats.append(d)
        # dec_feats: [hx6, hx5d, hx4d, hx3d, hx2d, hx1d] -> side6 .. side1
        return dec_feats[::-1]

    def forward_all(self, x: Tensor) -> list[Tensor]:
        """Fused logits followed by the six side-output logits, all at input size."""
        feats = self.side_inputs(x)
        head: Any = self.head_for(max(x.shape[-2:]))  # layers registered by name
        sides = [getattr(head, f"side{i}")(f) for i, f in enumerate(feats, start=1)]
        sides = [sides[0]] + [_upsample_like(s, sides[0]) for s in sides[1:]]
        fused = head.outconv(torch.cat(sides, 1))
        return [fused, *sides]

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if self.training:
            return self.forward_all(x)
        return torch.sigmoid(self.forward_all(x)[0])


def build_model(arch: str = "u2netp") -> U2Net:
    """A freshly initialised model of the named architecture (``u2netp`` or ``u2net``)."""
    return U2Net(arch)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold each :class:`ConvBNReLU`'s batch norm into its convolution, in place, for
    inference: the same function in one pass over the data instead of two. u2netp ran
    11-12 % faster so on a CPU (shipped weights at 256 px, one thread: fp32 229 -> 202 ms,
    bf16 82 -> 74 ms), its output 2e-6 apart in fp32 and as close to fp32 in bf16 as
    before (mean |difference| 0.00023, unfolded 0.00028). The model must be in eval mode
    and stays there: a folded model cannot be trained."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ValueError("batch norms fold into convolutions in eval mode only")
    for m in model.modules():
        if isinstance(m, ConvBNReLU) and isinstance(m.bn_s1, nn.BatchNorm2d):
            m.conv_s1 = fuse_conv_bn_eval(m.conv_s1, m.bn_s1)
            m.bn_s1 = nn.Identity()
            m.folded = True
    return model


def _onednn_fuses() -> bool:
    """Whether this torch has oneDNN's fused convolution."""
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_convolution_pointwise"
    )
