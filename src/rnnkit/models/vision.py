"""Images in: a small VGG-style encoder, the captioner built on it, and a caption gallery.

:class:`VGGEncoder` follows Simonyan & Zisserman 2015 in miniature: blocks of 3 x 3
convolutions (stride 1, padding 1) and ReLUs, each block ending in a 2 x 2 max-pool that
halves the image and doubling the channels of the next; then a fully connected layer and a
ReLU give the feature vector, the lectures' "FC-4096 without the classifier", here far
smaller. Departure from the paper: batch normalisation after each convolution (on by
default), as torchvision's ``vgg*_bn`` variants do (Ioffe & Szegedy 2015), because it lets
a network trained from scratch for minutes on a CPU converge.

Shape letters: B batch, C channels, S image side in pixels, F feature size.
"""

from __future__ import annotations

import textwrap
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.pairs import PAD
from rnnkit.models.loss import Loss
from rnnkit.models.seq2seq import Decoder, DecoderState, batch_first_state, layer_state, state_parts

MEAN, SPREAD = 0.5, 0.25  # pixels in [0, 1] are centred and scaled by these


def to_tensor(pixels: np.ndarray) -> Tensor:
    """uint8 (B, S, S, 3) pixels -> float (B, 3, S, S), roughly zero mean, unit spread."""
    if pixels.ndim != 4 or pixels.shape[3] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels (B, S, S, 3), got {pixels.dtype} {pixels.shape}")
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float()
    return (x / 255.0 - MEAN) / SPREAD


class VGGEncoder(nn.Module):
    """(B, 3, S, S) images -> (B, F) features: conv blocks, flatten, FC, ReLU."""

    def __init__(
        self,
        image_size: int = 48,
        blocks: int = 3,
        width: int = 16,
        convs: int = 2,
        features: int = 256,
        batch_norm: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        if blocks < 1 or convs < 1 or width < 1 or features < 1:
            raise ValueError(
                f"blocks, convs, width and features must be positive, got {blocks}, "
                f"{convs}, {width}, {features}"
            )
        if image_size % 2**blocks:
            raise ValueError(
                f"image_size must be divisible by 2**blocks = {2**blocks} (each block halves "
                f"it), got {image_size}"
            )
        self.image_size, self.feature_size = image_size, features
        self.channels = width * 2 ** (blocks - 1)  # C of the last block's maps
        self.cells = (image_size // 2**blocks) ** 2  # cells of the last block's maps
        layers, channels = [], 3
        for block in range(blocks):
            out = width * 2**block
            for _ in range(convs):
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=not batch_norm)]
                layers += [nn.BatchNorm2d(out)] if batch_norm else []
                layers += [nn.ReLU(inplace=True)]
                channels = out
            layers.append(nn.MaxPool2d(2))
        self.convs = nn.Sequential(*layers)
        side = image_size // 2**blocks
        self.fc = nn.Linear(channels * side * side, features)
        self.drop = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation for layers followed by a ReLU (He et al. 2015, section 2.2), as
        torchvision's VGG does for its convolutions; zero biases; batch norm as identity."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def maps(self, images: Tensor) -> Tensor:
        """images (B, 3, S, S) -> the last block's maps (B, C, S / 2**blocks, S / 2**blocks)."""
        size = self.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"expected images (B, 3, {size}, {size}), got {tuple(images.shape)}")
        return self.convs(images)

    def head(self, maps: Tensor) -> Tensor:
        """The last block's maps -> features (B, F), non-negative (after the ReLU)."""
        return self.drop(torch.relu(self.fc(maps.flatten(1))))

    def forward(self, images: Tensor) -> Tensor:
        """images (B, 3, S, S) -> features (B, F)."""
        return self.head(self.maps(images))


class Captions(NamedTuple):
    """A batch of captions: each image once, and each caption's image."""

    inputs: Tensor  # (I, F) feature rows or (I, 3, S, S) images, each image once
    rows: Tensor  # (B,) the image (row of ``inputs``) of each caption
    target_in: Tensor  # (B, T) <sos> w_1 ... w_n, the decoder's inputs
    target_out: Tensor  # (B, T) w_1 ... w_n <eos>, what it should predict
    teacher_forcing: float = 1.0  # the chance each step is fed the truth


class Captioner(nn.Module):
    """Encoder (or none, for precomputed features) -> initial state -> seq2seq decoder.

    The features f set the decoder's initial state, h_0 = tanh(W_h f + b_h) (and c_0 likewise
    for an LSTM); with ``feed_image`` f is also the input of a step before <sos> (Vinyals et
    al. 2015, section 3.1). With attention, each decoder step also looks at the cells of the
    CNN's last maps (the memory, B x S cells x C channels), as Show, Attend and Tell does
    with VGG's conv5 grid (Xu et al. 2015, section 3.1.2); the seq2seq decoder's own Luong or
    Bahdanau attention does it. Departure: a learned vector per cell is added to the memory
    (as DETR adds positional encodings to its CNN's maps, Carion et al. 2020, section 3.2),
    so the decoder can say where the cell it attends to is. Precomputed rows have no grid,
    so no attention.
    """

    def __init__(
        self,
        vocab_size: int,
        encoder: VGGEncoder | None,
        feature_size: int,
        embedding: int,
        hidden: int,
        layers: int = 1,
        cell: str = "lstm",
        attention: str = "luong",
        feed_image: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.encoder = encoder
        F_, L, H = feature_size, layers, hidden
        attention = attention if encoder is not None else "none"
        memory_size = encoder.channels if encoder is not None else 0
        self.decoder = Decoder(
            vocab_size, embedding, H, L, cell, memory_size, attention, 0, dropout
        )
        parts = len(state_parts(self.decoder.rnn.cells[0].init_state(1)))  # LSTM: h and c
        self.norm = nn.LayerNorm(F_)  # any network's features reach the decoder at one scale
        self.init_state = nn.ModuleList(nn.Linear(F_, L * H) for _ in range(parts))
        self.where = None  # a learned vector per cell, so attention knows where a cell is
        if self.decoder.attention is not None:
            self.where = nn.Parameter(0.1 * torch.randn(encoder.cells, memory_size))  # (S, C)
        step_input = self.decoder.rnn.input_size  # E, or E + C when Bahdanau feeds the context
        self.image_input = nn.Linear(F_, step_input) if feed_image else None
        self.drop = nn.Dropout(dropout)

    def encode(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Features (B, F) and the memory (B, S, C) attention reads (S = 0 without it), of
        images (B, 3, S, S) through the encoder, or of feature rows (B, F) as they are."""
        if self.encoder is None:
            return inputs, inputs.new_zeros(inputs.shape[0], 0, 0)
        maps = self.encoder.maps(inputs)  # (B, C, s, s)
        memory = maps.flatten(2).transpose(1, 2)  # (B, S, C), cells in reading order
        if self.where is None:
            return self.encoder.head(maps), memory[:, :0, :0]
        return self.encoder.head(maps), memory + self.where

    def start(self, features: Tensor, memory: Tensor) -> DecoderState:
        """The decoder's state before <sos>, from features (B, F) and memory (B, S, C)."""
        f = self.drop(self.norm(features))
        B, L, H = f.shape[0], self.decoder.rnn.num_layers, self.decoder.rnn.hidden_size
        hidden = tuple(torch.tanh(part(f)).view(B, L, H) for part in self.init_state)
        if self.image_input is not None:  # step -1: the image is the input
            _, state = self.decoder.rnn(self.image_input(f).unsqueeze(1), layer_state(hidden))
            hidden = batch_first_state(state)
        attention = self.decoder.attention
        keys = memory if attention is None else attention.keys(memory)
        mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)  # (B, S)
        return DecoderState(hidden, memory, keys, mask)

    def forward(self, inputs: Tensor, target_in: Tensor, teacher_forcing_ratio: float = 1.0):
        """inputs, target_in (B, T) <sos> w_1 .. -> logits (B, T, V)."""
        return self.captions_of(self.encode(inputs), target_in, teacher_forcing_ratio)

    def loss(self, batch: Captions, carry=None) -> Loss:
        """Cross-entropy summed over the real caption words and <eos> (padding ignored).
        Each image is encoded once, however many of its captions the batch holds."""
        device = self.decoder.head.weight.device
        encoded = self.encode(batch.inputs.to(device))  # per image
        rows = batch.rows.to(device)
        encoded = tuple(part[rows] for part in encoded)  # per caption: (B, F), (B, S, C)
        logits = self.captions_of(encoded, batch.target_in.to(device), batch.teacher_forcing)
        target_out = batch.target_out.to(device)  # (B, T)
        if logits.shape[:2] != target_out.shape:
            raise ValueError(f"logits {tuple(logits.shape)} do not match {tuple(target_out.shape)}")
        total = F.cross_entropy(
            logits.float().flatten(0, 1), target_out.flatten(), ignore_index=PAD, reduction="sum"
        )
        count = int((target_out != PAD).sum())
        return Loss(total, count, count)

    def captions_of(self, encoded, target_in: Tensor, teacher_forcing_ratio: float = 1.0):
        """Logits (B, T, V) of captions target_in (B, T) of images encoded as (features,
        memory)."""
        state = self.start(*encoded)
        return self.decoder(target_in, state, teacher_forcing_ratio)[0]

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One decoder step in the form :mod:`rnnkit.models.decode` expects."""
        logits, state, _ = self.decoder.step(tokens, state)
        return logits, state


def plot_gallery(pixels: np.ndarray, generated: list[str], references: list[list[str]], path):
    """A PNG grid: each image with its generated caption (green when it equals a reference,
    red otherwise) and its first reference caption under it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count, columns = len(pixels), 4
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, said, refs in zip(axes.flat, pixels, generated, references, strict=False):
        ax.imshow(image, interpolation="nearest")
        colour = "darkgreen" if said in refs else "firebrick"
        ax.set_title(textwrap.fill(said, 40), fontsize=8, color=colour)
        ax.text(
            0.5,
            -0.04,
            textwrap.fill("ref: " + refs[0], 44),
            transform=ax.transAxes,
            ha="center",
            va="top",
            fontsize=7,
            color="dimgray",
        )
    fig.subplots_adjust(left=0.02, right=0.98, top=0.95, bottom=0.06, hspace=0.55, wspace=0.1)
    fig.savefig(path, dpi=90)
    plt.close(fig)
