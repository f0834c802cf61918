"""Language-model pretraining of a text model's embedding and recurrent layer.

Semi-supervised sequence learning (Dai & Le 2015, section 2): before a classifier learns
from its few labels, its embedding and recurrent layer learn to predict the words of
unlabelled in-domain text, and the classifier then starts from those weights. Dai & Le
pretrain a forward LSTM; here a bidirectional layer trains both ways at once, the forward
direction predicting the next token and the reverse direction the previous one, as ELMo
trains its two directions (Peters et al. 2018, section 3.1). Neither direction sees the
token it predicts. Departure from both papers: the softmax covers only the ``classes - 1``
commonest tokens and the rest share one class, so that a step costs about as much as the
layer's own work on a CPU.

The output heads are thrown away afterwards; only the embedding and the layer keep what
they learned.

Shape letters: T time (tokens), B batch, E embedding size, H hidden size, D directions,
V predicted classes.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rnnkit.data.pairs import PAD, pad

IGNORE = -100  # cross_entropy's ignore_index: padding and the ends of each text


def targets(ids: torch.Tensor, lengths: torch.Tensor, classes: int) -> tuple:
    """(T, B) ids -> the next and the previous token's class at each step, (T, B) each.

    Token ids at or above ``classes - 1`` become the shared class ``classes - 1``; steps
    with nothing to predict (past the end, or the first/last token) are ``IGNORE``."""
    labels = ids.clamp(max=classes - 1)
    steps = torch.arange(ids.shape[0], device=ids.device)[:, None]  # (T, 1)
    real = steps < lengths.to(ids.device)  # (T, B)
    labels = labels.masked_fill(~real, IGNORE)
    ignore = torch.full_like(labels[:1], IGNORE)
    following = torch.cat([labels[1:], ignore])  # step t predicts token t + 1
    preceding = torch.cat([ignore, labels[:-1]])  # step t predicts token t - 1
    return following.masked_fill(~real, IGNORE), preceding.masked_fill(~real, IGNORE)


def lm_loss(embed, rnn, heads, drop, ids, lengths, classes) -> torch.Tensor:
    """Mean cross-entropy of each direction's prediction of its neighbouring token."""
    output, _ = rnn(drop(embed(ids)), lengths=lengths)  # (T, B, D*H)
    following, preceding = targets(ids, lengths, classes)
    parts = output.chunk(len(heads), dim=-1)  # D tensors (T, B, H), forward first
    wanted = (following, preceding)[: len(heads)]
    losses = []
    for head, h, y in zip(heads, parts, wanted, strict=True):
        keep = (y != IGNORE).to(h.device)  # the softmax only where there is a word to predict
        logits = head(drop(h[keep]))  # (N, V)
        losses.append(F.cross_entropy(logits, y.to(h.device)[keep]))
    return sum(losses) / len(losses)


def length_batches(sequences: list[list[int]], batch_size: int, rng) -> list[list[int]]:
    """Indices of sequences in batches of similar length (little padding), in random order."""
    order = sorted(rng.permutation(len(sequences)), key=lambda i: len(sequences[i]))
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    return [batches[k] for k in rng.permutation(len(batches))]


def pretrain(embed, rnn, sequences, minutes, classes=2000, batch_size=64, lr=2e-3, dropout=0.3,
             seed=0, steps=0) -> dict:  # fmt: skip
    """Train ``embed`` and ``rnn`` (forward, or bidirectional with one layer) as a language
    model on ``sequences`` (lists of token ids) for ``minutes``, or for ``steps`` if given.

    Returns the steps taken and the mean loss of the first and of the last 20 steps."""
    sequences = [s for s in sequences if len(s) > 1]  # a lone token has no neighbour
    if not sequences:
        raise ValueError("pretraining needs texts of at least two tokens, got none")
    if rnn.bidirectional and rnn.num_layers > 1:  # layer 2 reads layer 1's reverse direction
        raise ValueError(
            f"pretraining reads each direction of one layer; a bidirectional layer has to "
            f"have num_layers=1, got {rnn.num_layers}"
        )
    torch.manual_seed(seed)
    hidden, directions = rnn.hidden_size, 2 if rnn.bidirectional else 1
    heads = nn.ModuleList(nn.Linear(hidden, classes) for _ in range(directions))
    device = embed.weight.device
    heads.to(device)
    drop = nn.Dropout(dropout)
    params = [*embed.parameters(), *rnn.parameters(), *heads.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    rng, losses, start = np.random.default_rng(seed), [], time.perf_counter()
    embed.train(), rnn.train()
    batches = []
    while (steps and len(losses) < steps) or (
        not steps and time.perf_counter() - start < 60 * minutes
    ):
        batches = batches or length_batches(sequences, batch_size, rng)  # a new epoch
        batch = [sequences[i] for i in batches.pop()]
        ids = pad(batch, PAD).T.contiguous()  # (T, B)
        lengths = torch.tensor([len(s) for s in batch])
        loss = lm_loss(embed, rnn, heads, drop, ids.to(device), lengths, classes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    return {
        "steps": len(losses),
        "first_loss": float(np.mean(losses[:20])) if losses else float("nan"),
        "last_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
    }
