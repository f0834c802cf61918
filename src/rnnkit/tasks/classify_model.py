"""The classify task's model and its inputs: tokens to indices, padded batches, the
recurrent text classifier and its class probabilities.

Shape letters: T time (tokens), B batch, E embedding size, H hidden size, D directions,
K classes, F ratio features per step, N texts.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import rnnkit
from rnnkit.data.pairs import UNK, TokenVocab, tokenize
from rnnkit.models.loss import Loss
from rnnkit.models.pooling import pool
from rnnkit.tasks import classify_features as features

# --- tokens ---


def encode(texts: list[str], vocab: TokenVocab, config) -> list[list[int]]:
    """Token indices per text, cut at ``max_tokens``; an empty text is one unknown token."""
    return [vocab.encode(tokenize(t, config.tokens)[: config.max_tokens]) or [UNK] for t in texts]


def pad(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Index lists -> (T, B) padded with 0, and (B,) lengths."""
    lengths = torch.tensor([len(s) for s in sequences])
    ids = torch.zeros(int(lengths.max()), len(sequences), dtype=torch.long)
    for b, s in enumerate(sequences):
        ids[: len(s), b] = torch.tensor(s)
    return ids, lengths


def pad_ratios(ratios: list[np.ndarray]) -> torch.Tensor:
    """(T_i, F) arrays -> (T, B, F) padded with 0."""
    out = torch.zeros(max(len(r) for r in ratios), len(ratios), ratios[0].shape[1])
    for b, r in enumerate(ratios):
        out[: len(r), b] = torch.from_numpy(r)
    return out


def inputs(texts: list[str], vocab, config, ratios) -> tuple[list, list | None]:
    """Token indices per text and, with a ratio table, each text's (T, F) ratios."""
    encoded = encode(texts, vocab, config)
    return encoded, None if ratios is None else ratios.features(encoded)


# --- model ---


class TextClassifier(nn.Module):
    """Embedding (+ projected ratios) -> recurrent layers -> pooling -> dropout -> linear;
    returns logits (B, K)."""

    def __init__(self, vocab_size: int, classes: int, config):
        super().__init__()
        self.pooling, self.directions = config.pooling, 2 if config.bidirectional else 1
        self.embed = nn.Embedding(vocab_size, config.embedding, padding_idx=0)
        self.ratios = None  # (F -> E): the ratios enter the layer through the embedding space
        if config.nb_features:
            size = features.feature_size(classes)
            self.ratios = nn.Linear(size, config.embedding, bias=False)
        between = config.dropout if config.layers > 1 else 0.0
        self.rnn = rnnkit.layers.make_layer(
            config.cell, config.embedding, config.hidden, num_layers=config.layers,
            dropout=between, bidirectional=config.bidirectional,
        )  # fmt: skip
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.directions * config.hidden, classes)
        self.label_smoothing = getattr(config, "label_smoothing", 0.0)
        self.register_buffer("class_weights", None, persistent=False)  # (K,), or None: equal

    def represent(self, ids: torch.Tensor, lengths: torch.Tensor, ratios=None) -> torch.Tensor:
        """(T, B) token indices, (B,) lengths and (T, B, F) ratios -> (B, D*H), one vector per
        text. Without ``ratios`` (as an exported model runs) they count as zeros."""
        x = self.drop(self.embed(ids))  # (T, B, E)
        if self.ratios is not None and ratios is not None:
            x = x + self.ratios(ratios)  # (T, B, F) -> (T, B, E)
        output, _ = self.rnn(x, lengths=lengths)  # (T, B, D*H)
        return pool(output, lengths, self.pooling, self.directions)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, ratios=None) -> torch.Tensor:
        return self.head(self.drop(self.represent(ids, lengths, ratios)))  # (B, K)

    def loss(self, batch, carry=None) -> Loss:
        """Cross-entropy of a batch (ids, lengths, labels[, ratios]) summed over its texts,
        each weighted by its class's weight (``class_weights``); tokens are the words."""
        ids, lengths, y, *ratios = (t.to(self.head.weight.device) for t in batch)
        logits = self(ids, lengths, *ratios).float()  # (B, K)
        w = self.class_weights
        total = F.cross_entropy(
            logits, y, weight=w, label_smoothing=self.label_smoothing, reduction="sum"
        )
        weight = len(y) if w is None else float(w[y].sum())
        return Loss(total, weight, int(lengths.sum()))


@torch.no_grad()
def probabilities(model: TextClassifier, encoded: list[list[int]], ratios=None, batch_size=256):
    """(N, K) class probabilities, texts scored in batches of similar length."""
    device, out = model.head.weight.device, np.zeros((len(encoded), model.head.out_features))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, lengths = pad([encoded[i] for i in rows])
        steps = None if ratios is None else pad_ratios([ratios[i] for i in rows]).to(device)
        logits = model(ids.to(device), lengths.to(device), steps)
        out[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return out


def log_loss(probs: np.ndarray, labels: list[int]) -> float:
    return float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12)).mean())
