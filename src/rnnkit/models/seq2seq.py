"""Encoder-decoder networks: the lectures' "many to one, then one to many".

The encoder reads a source sentence of any length into its final state (and, for
attention, one vector per source token, the *memory*); a :class:`Bridge` turns that final
state into the decoder's initial state; the decoder writes the target from ``<sos>`` to
``<eos>``, one token per step, each step fed the previous token: the known one under
teacher forcing, its own guess otherwise.

Attention (``attention="bahdanau"`` or ``"luong"``) lets every decoder step look back at
the whole memory instead of the final state alone, the step from these lectures toward
Transformers:

- Bahdanau et al. 2015 (additive): score(s_{t-1}, h_j) = v^T tanh(W s_{t-1} + U h_j),
  from the decoder's *previous* state; the context c_t joins the input of step t.
- Luong et al. 2015 ("general", multiplicative): score(h_t, h_j) = h_t^T W_a h_j, from the
  decoder's *current* output; h~_t = tanh(W_c [c_t; h_t]) feeds the output layer. Luong's
  input feeding (section 3.3) is left out, so under full teacher forcing the decoder runs
  over the whole target in one call of the fused layer.

Padding (the ``PAD`` id after a sentence's end) never reaches the encoder's final state
(the layers stop each sequence at its length), the attention weights (masked to exactly
zero) or the loss (``ignore_index``).

Shape letters: B batch, S source length, T target length, E embedding, H hidden size,
M memory size (directions x encoder H), A attention size, L layers, V vocabulary.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import rnnkit
from rnnkit.data.pairs import PAD, Batch
from rnnkit.models.loss import Loss

CELLS = rnnkit.layers.CELLS
ATTENTIONS = ("none", "bahdanau", "luong")


def make_layer(
    cell: str,
    input_size: int,
    hidden: int,
    layers: int,
    dropout: float,
    bidirectional: bool = False,
) -> rnnkit.layers.RecurrentLayer:
    """A batch-first rnnkit layer of the named cell."""
    return rnnkit.layers.make_layer(
        cell,
        input_size,
        hidden,
        num_layers=layers,
        dropout=dropout if layers > 1 else 0.0,
        bidirectional=bidirectional,
        batch_first=True,
    )


def state_parts(state) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def pack_parts(parts: tuple[Tensor, ...]):
    return parts if len(parts) == 2 else parts[0]


class Encoder(nn.Module):
    """Embedding -> recurrent layers over the source; returns the memory and final state."""

    def __init__(
        self,
        vocab_size: int,
        embedding: int,
        hidden: int,
        layers: int,
        cell: str,
        bidirectional: bool,
        dropout: float,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding, padding_idx=PAD)
        self.rnn = make_layer(cell, embedding, hidden, layers, dropout, bidirectional)
        self.drop = nn.Dropout(dropout)
        self.memory_size = hidden * (2 if bidirectional else 1)

    def forward(self, source: Tensor, lengths: Tensor):
        """source (B, S) ids -> memory (B, S, M), zero at padding; final state at each end."""
        memory, final = self.rnn(self.drop(self.embed(source)), lengths=lengths.cpu())
        return memory, final  # final: (L*D, B, H), or a pair of them for an LSTM


class Bridge(nn.Module):
    """The encoder's final state -> the decoder's initial state.

    When both have the same state parts, size and layers and the encoder runs one way, the
    state is handed over as it is (Sutskever et al. 2014). Otherwise each part of the
    decoder's state is learned from the encoder's top layer, both directions joined:
    tanh(W [h_fwd; h_bwd] + b), as Bahdanau et al. 2015 (appendix A.2.2) start their decoder
    from tanh(W_s h_1 backward).
    """

    def __init__(
        self, encoder: rnnkit.layers.RecurrentLayer, decoder: rnnkit.layers.RecurrentLayer
    ):
        super().__init__()
        enc_parts = len(state_parts(encoder.cells[0].init_state(1)))  # 2 for an LSTM: (h, c)
        self.dec_parts = len(state_parts(decoder.cells[0].init_state(1)))
        self.directions, self.layers = encoder.num_directions, decoder.num_layers
        self.hidden = decoder.hidden_size
        self.copy = (
            enc_parts == self.dec_parts
            and encoder.num_directions == 1
            and encoder.hidden_size == decoder.hidden_size
            and encoder.num_layers == decoder.num_layers
        )
        top = encoder.num_directions * encoder.hidden_size
        size = decoder.num_layers * decoder.hidden_size
        self.project = nn.ModuleList(
            [] if self.copy else [nn.Linear(top, size) for _ in range(self.dec_parts)]
        )

    def forward(self, final) -> tuple[Tensor, ...]:
        """Encoder final state (L*D, B, H_enc) parts -> decoder state parts (L, B, H)."""
        parts = state_parts(final)
        if self.copy:
            return parts
        top = torch.cat(list(parts[0][-self.directions :]), dim=-1)  # (B, D*H_enc)
        B = top.shape[0]
        return tuple(
            torch.tanh(p(top)).view(B, self.layers, self.hidden).transpose(0, 1).contiguous()
            for p in self.project
        )  # each (L, B, H)


def attend(scores: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax of scores over real source positions; context = weighted sum of the memory.

    scores (B, T, S), memory (B, S, M), mask (B, S) -> context (B, T, M), weights (B, T, S)
    with weights exactly zero at padding.
    """
    scores = scores.masked_fill(~mask.unsqueeze(1), -torch.inf)
    weights = torch.softmax(scores, dim=-1)  # (B, T, S)
    return weights @ memory, weights


class BahdanauAttention(nn.Module):
    """Additive: score(q, h_j) = v^T tanh(W q + U h_j) (Bahdanau et al. 2015, appendix A.1.2)."""

    def __init__(self, query_size: int, memory_size: int, size: int):
        super().__init__()
        self.query = nn.Linear(query_size, size, bias=False)  # W
        self.key = nn.Linear(memory_size, size)  # U, applied once per sentence
        self.v = nn.Linear(size, 1, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        return self.key(memory)  # (B, S, A)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor):
        """query (B, T, Q) -> context (B, T, M), weights (B, T, S)."""
        hidden = torch.tanh(self.query(query).unsqueeze(2) + keys.unsqueeze(1))  # (B, T, S, A)
        return attend(self.v(hidden).squeeze(3), memory, mask)


class LuongAttention(nn.Module):
    """Multiplicative ("general"): score(h_t, h_j) = h_t^T W_a h_j (Luong et al. 2015, eq. 8)."""

    def __init__(self, query_size: int, memory_size: int, size: int = 0):
        super().__init__()
        self.key = nn.Linear(memory_size, query_size, bias=False)  # W_a, once per sentence

    def keys(self, memory: Tensor) -> Tensor:
        return self.key(memory)  # (B, S, Q)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor):
        """query (B, T, Q) -> context (B, T, M), weights (B, T, S)."""
        return attend(query @ keys.transpose(1, 2), memory, mask)  # scores (B, T, S)


class DecoderState(NamedTuple):
    """What one decoder step needs; every tensor batch first (see :mod:`rnnkit.models.decode`)."""

    hidden: tuple[Tensor, ...]  # the recurrent state, each part (B, L, H)
    memory: Tensor  # (B, S, M) encoder outputs, zero at padding
    keys: Tensor  # (B, S, A) the memory projected for attention (empty without attention)
    mask: Tensor  # (B, S) True at real source tokens


def layer_state(hidden: tuple[Tensor, ...]):
    """Batch-first parts (B, L, H) -> the layer's state (L, B, H), or (h, c) for an LSTM."""
    return pack_parts(tuple(h.transpose(0, 1).contiguous() for h in hidden))


def batch_first_state(state) -> tuple[Tensor, ...]:
    return tuple(h.transpose(0, 1) for h in state_parts(state))  # each (B, L, H)


class Decoder(nn.Module):
    """Embedding -> recurrent layers (-> attention) -> linear over the target vocabulary."""

    def __init__(
        self,
        vocab_size: int,
        embedding: int,
        hidden: int,
        layers: int,
        cell: str,
        memory_size: int,
        attention: str,
        attention_size: int,
        dropout: float,
    ):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.kind = attention
        self.embed = nn.Embedding(vocab_size, embedding, padding_idx=PAD)
        fed_context = memory_size if attention == "bahdanau" else 0
        self.rnn = make_layer(cell, embedding + fed_context, hidden, layers, dropout)
        self.attention = None
        self.combine = None  # W_c of h~_t = tanh(W_c [c_t; h_t]) (Luong et al. 2015, eq. 5)
        if attention != "none":
            kind = BahdanauAttention if attention == "bahdanau" else LuongAttention
            self.attention = kind(hidden, memory_size, attention_size or hidden)
            self.combine = nn.Linear(memory_size + hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def output(self, out: Tensor, context: Tensor | None) -> Tensor:
        """Decoder outputs (B, T, H) and contexts (B, T, M) -> logits (B, T, V)."""
        if self.combine is not None:
            out = torch.tanh(self.combine(torch.cat([context, out], dim=-1)))  # (B, T, H)
        return self.head(self.drop(out))

    def step(self, tokens: Tensor, state: DecoderState):
        """tokens (B,) -> logits (B, V), the next state, attention weights (B, S) or None."""
        x = self.drop(self.embed(tokens)).unsqueeze(1)  # (B, 1, E)
        hidden = layer_state(state.hidden)
        context = weights = None
        if self.kind == "bahdanau":
            query = state_parts(hidden)[0][-1].unsqueeze(1)  # (B, 1, H): s_{t-1}, top layer
            context, weights = self.attention(query, state.keys, state.memory, state.mask)
            x = torch.cat([x, context], dim=-1)  # (B, 1, E+M)
        out, hidden = self.rnn(x, hidden)  # (B, 1, H)
        if self.kind == "luong":
            context, weights = self.attention(out, state.keys, state.memory, state.mask)
        logits = self.output(out, context).squeeze(1)  # (B, V)
        state = state._replace(hidden=batch_first_state(hidden))
        return logits, state, None if weights is None else weights.squeeze(1)

    def forward(self, target_in: Tensor, state: DecoderState, teacher_forcing_ratio: float = 1.0):
        """target_in (B, T) <sos> y_1 .. -> logits (B, T, V), weights (B, T, S) or None."""
        if teacher_forcing_ratio >= 1.0 and self.kind != "bahdanau":
            return self.forward_known(target_in, state)
        return self.forward_steps(target_in, state, teacher_forcing_ratio)

    def forward_known(self, target_in: Tensor, state: DecoderState):
        """Every input is the known token, so the layer runs over the whole target at once."""
        out, _ = self.rnn(self.drop(self.embed(target_in)), layer_state(state.hidden))  # (B, T, H)
        context = weights = None
        if self.kind == "luong":
            context, weights = self.attention(out, state.keys, state.memory, state.mask)
        return self.output(out, context), weights

    def forward_steps(self, target_in: Tensor, state: DecoderState, teacher_forcing_ratio: float):
        """One step at a time. Each next input is the known token with probability
        ``teacher_forcing_ratio``, drawn per token, else the step's own most likely token
        (Bengio et al. 2015, "scheduled sampling", draw from the model instead)."""
        B, T = target_in.shape
        logits, weights = [], []
        tokens = target_in[:, 0]
        for t in range(T):
            step_logits, state, step_weights = self.step(tokens, state)
            logits.append(step_logits)
            weights.append(step_weights)
            if t + 1 < T:
                known = torch.rand(B, device=target_in.device) < teacher_forcing_ratio
                tokens = torch.where(known, target_in[:, t + 1], step_logits.argmax(dim=-1))
        weights = None if weights[0] is None else torch.stack(weights, dim=1)  # (B, T, S)
        return torch.stack(logits, dim=1), weights  # (B, T, V)


class Seq2Seq(nn.Module):
    """Encoder, bridge and decoder. Linear and embedding layers keep torch.nn's
    initialisation; the recurrent cells use their own ``reset_parameters``."""

    def __init__(
        self,
        source_vocab: int,
        target_vocab: int,
        embedding: int = 128,
        hidden: int = 256,
        encoder_layers: int = 1,
        decoder_layers: int = 1,
        encoder_cell: str = "lstm",
        decoder_cell: str = "lstm",
        bidirectional: bool = True,
        attention: str = "luong",
        attention_size: int = 0,
        dropout: float = 0.0,
    ):
        super().__init__()
        encoder_hidden = hidden // 2 if bidirectional else hidden  # memory size M = hidden
        self.encoder = Encoder(
            source_vocab,
            embedding,
            encoder_hidden,
            encoder_layers,
            encoder_cell,
            bidirectional,
            dropout,
        )
        self.decoder = Decoder(
            target_vocab,
            embedding,
            hidden,
            decoder_layers,
            decoder_cell,
            self.encoder.memory_size,
            attention,
            attention_size,
            dropout,
        )
        self.bridge = Bridge(self.encoder.rnn, self.decoder.rnn)

    def start(self, source: Tensor, lengths: Tensor) -> DecoderState:
        """Encode source (B, S) with lengths (B,); the decoder's state before <sos>."""
        memory, final = self.encoder(source, lengths)  # (B, S', M), S' = longest length
        positions = torch.arange(memory.shape[1], device=memory.device)
        mask = positions < lengths.to(memory.device).unsqueeze(1)  # (B, S')
        attention = self.decoder.attention
        keys = (
            memory.new_zeros(*memory.shape[:2], 0) if attention is None else attention.keys(memory)
        )
        return DecoderState(batch_first_state(pack_parts(self.bridge(final))), memory, keys, mask)

    def forward(
        self, source: Tensor, lengths: Tensor, target_in: Tensor, teacher_forcing_ratio: float = 1.0
    ):
        """-> logits (B, T, V) and attention weights (B, T, S'), None without attention."""
        return self.decoder(target_in, self.start(source, lengths), teacher_forcing_ratio)

    def loss(self, batch: Batch, carry=None) -> Loss:
        """Cross-entropy summed over the real target tokens (padding ignored), each step fed
        the truth with the batch's teacher-forcing chance."""
        batch = batch.to(self.decoder.head.weight.device)
        logits, _ = self(batch.source, batch.source_lengths, batch.target_in, batch.teacher_forcing)
        if logits.shape[:2] != batch.target_out.shape:
            raise ValueError(f"logits {tuple(logits.shape)} do not match {batch.target_out.shape}")
        targets = batch.target_out.flatten()  # (B*T,)
        total = F.cross_entropy(
            logits.float().flatten(0, 1), targets, ignore_index=PAD, reduction="sum"
        )
        count = int((targets != PAD).sum())
        return Loss(total, count, count)

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One decoder step in the form :mod:`rnnkit.models.decode` expects."""
        logits, state, _ = self.decoder.step(tokens, state)
        return logits, state


def plot_attention(weights: torch.Tensor, source: list[str], output: list[str], path: str) -> None:
    """A PNG: one row per output token, one column per source token, darker = more weight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if tuple(weights.shape) != (len(output), len(source)):
        raise ValueError(f"weights {tuple(weights.shape)} for {len(output)}x{len(source)} tokens")
    fig, ax = plt.subplots(figsize=(1 + 0.5 * len(source), 1 + 0.4 * len(output)))
    image = ax.imshow(weights.numpy(), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source)), source, rotation=60, ha="right")
    ax.set_yticks(range(len(output)), output)
    ax.set(xlabel="source", ylabel="output")
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
