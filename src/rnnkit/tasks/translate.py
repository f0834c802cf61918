"""Translation: an encoder-decoder with attention, trained with teacher forcing on pairs.

The source sentence is read by the encoder, the decoder writes the target from <sos> to
<eos> (:mod:`rnnkit.models.seq2seq`), one token per step; training feeds it the known previous
token (teacher forcing, ratio 1.0, or a ratio decaying over the run), and inference
decodes greedily or with beam search (:mod:`rnnkit.models.decode`). Data: ``numbers-en-es``
(:mod:`rnnkit.data.numbers`) or a TSV file of ``source<TAB>target`` pairs
(:mod:`rnnkit.data.pairs`), split at random by source sentence, or by chapter for Bible
verses, so the same source never sits on both sides (:mod:`rnnkit.tasks.translate_data`).

Shape letters: B batch, S source length, T target length, V target vocabulary.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from rnnkit.data.files import write_json
from rnnkit.data.pairs import (
    EOS,
    PAD,
    SOS,
    UNK,
    Batch,
    TokenVocab,
    bucket_batches,
    detokenize,
    make_batch,
    pad,
    padding_report,
    tokenize,
)
from rnnkit.data.parts import part
from rnnkit.models import decode
from rnnkit.models.seq2seq import Seq2Seq, plot_attention
from rnnkit.tasks import default_run_dir, run_config
from rnnkit.tasks import translate_baselines as baselines
from rnnkit.tasks.translate_data import Data, encode_pairs, held_out_pairs, prepare, say, tokenized
from rnnkit.tasks.translate_scores import match_scores, one_token_share, one_token_warning
from rnnkit.training import config as configuration
from rnnkit.training.distributed import ALONE
from rnnkit.training.trainer import MODEL_FILE, Task, TrainConfig, Trainer, load_model, pick_device

NAME = "translate"
BY_WORD = ("word_for_word", "word for word by IBM Model 1")  # test.json's key, and its name
Cell = Literal["lstm", "gru", "rnn", "peephole"]


@dataclass
class Config(TrainConfig):
    """``rnnkit train translate``; the defaults train numbers-en-es with attention."""

    data: str = "numbers-en-es"  # numbers-en-es, or a TSV file of source<TAB>target lines
    tokens: Literal["word", "char"] = "word"  # tokenise both sides by word or by character
    lowercase: bool = True  # lower-case both sides (Unicode-aware) before tokenising
    min_freq: int = 1  # tokens seen fewer times in training become <unk>
    max_length: int = 50  # drop training pairs with a side longer than this many tokens
    numbers: int = 40_000  # numbers-en-es: distinct numbers made, all splits together
    val_fraction: float = 0.05  # share held out for validation
    test_fraction: float = 0.05  # share held out for the final test
    batch_size: int = 64  # sentence pairs per batch, bucketed by length
    encoder_cell: Cell = "lstm"  # recurrent cell of the encoder
    decoder_cell: Cell = "lstm"  # recurrent cell of the decoder
    embedding: int = 64  # token embedding size, both sides
    hidden: int = 256  # decoder hidden size; the encoder's outputs (both directions) match it
    encoder_layers: int = 1  # stacked encoder layers
    decoder_layers: int = 1  # stacked decoder layers
    bidirectional: bool = True  # read the source both ways (each direction hidden/2)
    attention: Literal["none", "bahdanau", "luong"] = "luong"  # attention over the source
    attention_size: int = 0  # Bahdanau's v^T tanh(...) size (0: hidden)
    dropout: float = 0.1  # dropout on embeddings, between layers and before the output
    teacher_forcing: float = 1.0  # probability of feeding the known previous token
    teacher_forcing_end: float = 1.0  # the ratio decays linearly to this ...
    teacher_forcing_steps: int = 0  # ... over this many steps (0: it stays constant)
    beam: int = 5  # beam width of `rnnkit translate` and `rnnkit eval` (1: greedy)
    length_penalty: float = 1.0  # beam search ranks by log p / length ** this
    max_output: int = 0  # decoding stops after this many tokens (0: 2 x source + 10)
    no_repeat_ngram: int = -1  # outputs repeat no n-gram this long (0: off; -1: 5 words, 30 chars)
    val_pairs: int = 1000  # validation pairs decoded greedily at each evaluation (0: all)
    test_pairs: int = 1000  # test pairs decoded with --beam for test.json (0: all)
    precision: Literal["auto", "fp32", "bf16"] = "fp32"  # fp32: exact masking comparisons
    threads: int = 0  # CPU threads for torch (0: torch's default; 1 is fastest on a busy machine)
    lr: float = 3e-3  # peak learning rate
    warmup: int = 100  # steps of linear warm-up from 0 to lr
    minutes: float = 5.0  # stop after this much training time (0: no limit)
    eval_every: int = 500  # evaluate on validation every this many steps


# --- model, loss, evaluation (the data: translate_data.py) ---


# the Config fields that are Seq2Seq's arguments
MODEL_FIELDS = (
    "embedding hidden encoder_layers decoder_layers encoder_cell decoder_cell bidirectional "
    "attention attention_size dropout"
).split()


def build_model(config: Config, source_size: int, target_size: int) -> Seq2Seq:
    return Seq2Seq(source_size, target_size, **{f: getattr(config, f) for f in MODEL_FIELDS})


def teacher_forcing_ratio(config: Config, step: int) -> float:
    """The ratio at ``step``: constant, or linear from the start value to the end value."""
    if config.teacher_forcing_steps <= 0:
        return config.teacher_forcing
    done = min(1.0, step / config.teacher_forcing_steps)
    return config.teacher_forcing + (config.teacher_forcing_end - config.teacher_forcing) * done


def batch_loss(model: Seq2Seq, batch: Batch):
    """Summed cross-entropy over real target tokens (padding ignored), correct guesses, count."""
    batch = batch.to(model.decoder.head.weight.device)
    logits, _ = model(batch.source, batch.source_lengths, batch.target_in)  # (B, T, V)
    targets = batch.target_out.flatten()
    total = F.cross_entropy(
        logits.float().flatten(0, 1), targets, ignore_index=PAD, reduction="sum"
    )
    real = targets != PAD
    correct = (logits.argmax(-1).flatten() == targets)[real].sum()
    return total, int(correct), int(real.sum())


@torch.no_grad()
def score_pairs(model: Seq2Seq, pairs, batch_size: int = 256, world=ALONE) -> dict:
    """Teacher-forced loss (nats per target token) and token accuracy over ``pairs``; under
    torchrun each process scores its share of the batches."""
    lengths = [(len(s), len(t)) for s, t in pairs]
    total, correct, count = 0.0, 0, 0
    for chunk in world.share(bucket_batches(lengths, batch_size, seed=0)):
        loss, right, n = batch_loss(model, make_batch([pairs[i] for i in chunk]))
        total, correct, count = total + loss.item(), correct + right, count + n
    total, correct, count = world.sum(total, correct, count)
    return {"loss": total / count, "token_accuracy": correct / count}


def repeat_guard(config: Config) -> int:
    """--no-repeat-ngram with -1 made 5 word tokens or 30 characters: a shorter n forbids
    what references say. Of the Reina-Valera's verses 14.6% repeat a word trigram within the
    verse, 2.2% a 5-gram, 0.5% a 30-character n-gram; of numbers-en-es 0.8% a trigram
    ("... y dos mil ... y dos"), none a 5-gram, so the numbers stay reachable."""
    if config.no_repeat_ngram >= 0:
        return config.no_repeat_ngram
    return 5 if config.tokens == "word" else 30


def search_for(
    beam: int = 1, length_penalty: float = 1.0, temperature: float = 0.0, seed: int = 1,
    no_repeat_ngram: int = 0,
):  # fmt: skip
    """The decoding function: sampling when ``temperature`` > 0, else greedy (``beam`` 1) or
    beam search, blocking repeated n-grams of ``no_repeat_ngram`` tokens; each is called as
    ``search(step, state, batch_size, sos, eos, max_length)``."""
    guard = dict(pad=PAD, no_repeat_ngram=no_repeat_ngram)
    if temperature > 0:
        generator = torch.Generator().manual_seed(seed)
        return partial(decode.sample, temperature=temperature, generator=generator, **guard)
    if beam == 1:
        return partial(decode.greedy, **guard)
    return partial(decode.beam_search, width=beam, length_penalty=length_penalty, **guard)


@torch.no_grad()
def translate_ids(
    model: Seq2Seq,
    sources: list[list[int]],
    search=None,
    max_output: int = 0,
    batch_size: int = 256,
) -> list[list[int]]:
    """Target ids (without <eos>) for each source, batched by length (greedy by default)."""
    search = search or search_for()
    device = model.decoder.head.weight.device
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[list[int]] = [[] for _ in sources]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        lengths = torch.tensor([len(sources[i]) for i in chunk])
        state = model.start(pad([sources[i] for i in chunk]).to(device), lengths.to(device))
        limit = max_output or 2 * int(lengths.max()) + 10
        found = search(model.step, state, len(chunk), SOS, EOS, limit)
        for i, row in zip(chunk, found.tokens.tolist(), strict=True):
            out[i] = [t for t in row if t not in (EOS, PAD)]
    return out


def test_report(model, data: Data, config: Config) -> dict:
    """The best model's scores on the test split (--beam), and beside them two floors of
    translation: the source sentence copied as it is, and a word-for-word translation by
    IBM Model 1 learned from the training pairs; a warning when the output is mostly one token."""
    pairs = data.test[: config.test_pairs] if config.test_pairs else data.test
    encoded = encode_pairs(pairs, data.source_vocab, data.target_vocab)
    result = {"pairs": len(pairs), "beam": config.beam, **score_pairs(model, encoded)}
    search = search_for(config.beam, config.length_penalty, no_repeat_ngram=repeat_guard(config))
    ids = translate_ids(model, [s for s, _ in encoded], search, config.max_output)
    hypotheses = [data.target_vocab.decode(h) for h in ids]
    references = [t for _, t in pairs]
    result.update(match_scores(hypotheses, references, config.tokens))
    table = baselines.lexicon(data.train, data.source_vocab, data.target_vocab)
    for name, baseline in (
        ("copy_source", [s for s, _ in pairs]),
        (BY_WORD[0], baselines.word_for_word([s for s, _ in pairs], table)),
    ):
        scores = match_scores(baseline, references, config.tokens)
        result.update({f"{name}_{k}": v for k, v in scores.items()})
    result["one_token_share"] = one_token_share(hypotheses)[0]
    if warning := one_token_warning(hypotheses, "test output"):
        say(warning)
    return result


def decoded_scores(
    model, pairs, target_vocab: TokenVocab, config: Config, beam: int, world=ALONE, warn=False
) -> dict:
    """Exact match, BLEU and chrF of the decoded ``pairs``, and the commonest token's share;
    with ``warn``, a warning when that share is over half."""
    search = search_for(beam, config.length_penalty, no_repeat_ngram=repeat_guard(config))
    sources = [s for s, _ in pairs]
    ids = world.map(lambda some: translate_ids(model, some, search, config.max_output), sources)
    hypotheses = [target_vocab.decode(h) for h in ids]
    references = [target_vocab.decode(t) for _, t in pairs]
    share = {"one_token_share": one_token_share(hypotheses)[0]}
    if warn and (warning := one_token_warning(hypotheses)):
        say(warning)
    return {**match_scores(hypotheses, references, config.tokens), **share}


def build_task(config: Config, data: Data) -> Task:
    torch.manual_seed(config.seed)
    model = build_model(config, len(data.source_vocab), len(data.target_vocab))
    lengths = [(len(s), len(t)) for s, t in data.train]
    batches_of = {}  # the batches of the current epoch: new buckets every epoch
    per_epoch = math.ceil(len(data.train) / config.batch_size)
    val = data.val[: config.val_pairs] if config.val_pairs else data.val

    def batch(step: int, rank: int, size: int) -> Batch:
        epoch, index = divmod(step, per_epoch)
        if epoch not in batches_of:
            batches_of.clear()
            batches_of[epoch] = bucket_batches(lengths, config.batch_size, config.seed + epoch)
        rows = part(batches_of[epoch][index], rank, size)
        return make_batch([data.train[i] for i in rows], teacher_forcing_ratio(config, step))

    def evaluate(model, world) -> dict:
        scores = score_pairs(model, data.val, world=world)
        found = decoded_scores(model, val, data.target_vocab, config, 1, world)
        return {
            "val_loss": scores["loss"],
            "val_token_accuracy": scores["token_accuracy"],
            "val_exact": found["exact"],
            "val_bleu": found["bleu"],
        }

    return Task(model, batch, evaluate, per_epoch, "target tokens", "loss (nats per token)")


def train(config: Config, resume: bool = False, progress=None) -> Trainer:
    """Train (or with ``resume``, continue) the run in ``config.out``; return the trainer."""
    run_dir = Path(config.out or default_run_dir(NAME))
    config.out = str(run_dir)
    vocabs = load_vocabs(run_dir) if resume else None
    data = prepare(config, vocabs)
    lengths = [(len(s), len(t) + 1) for s, t in data.train]  # targets with <eos> (or <sos>)
    padding = padding_report(lengths, config.batch_size, config.seed)
    say(f"{len(data.train)} training pairs; {padding}")
    trainer = Trainer(config, build_task(config, data), run_dir, progress)
    if resume:
        trainer.restore()
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        configuration.save(config, run_dir / "config.json", task=NAME)
        data.source_vocab.save(run_dir / "source_vocab.json")
        data.target_vocab.save(run_dir / "target_vocab.json")
    if trainer.fit() == "done" and trainer.world.rank == 0 and data.test:
        load_model(trainer.model, run_dir / MODEL_FILE)
        result = test_report(trainer.model.eval(), data, config)
        write_json(run_dir / "test.json", result, indent=2)
        floors = "; ".join(
            f"{what}: BLEU {result[name + '_bleu']:.1f}, chrF {result[name + '_chrf']:.1f}"
            for name, what in (("copy_source", "the source copied"), BY_WORD)
        )
        say(f"test: BLEU {result['bleu']:.1f}, chrF {result['chrf']:.1f} ({floors})")
    return trainer


# --- using a trained run ---


def load_vocabs(run_dir: Path) -> tuple[TokenVocab, TokenVocab]:
    run_dir = Path(run_dir)
    return (
        TokenVocab.load(run_dir / "source_vocab.json"),
        TokenVocab.load(run_dir / "target_vocab.json"),
    )


def load_run(run_dir: Path, device: str = "auto"):
    """The config, (source, target) vocabularies and best model of a run directory."""
    run_dir = Path(run_dir)
    config = run_config(run_dir, Config)
    vocabs = load_vocabs(run_dir)
    model = build_model(config, len(vocabs[0]), len(vocabs[1]))
    load_model(model, run_dir / MODEL_FILE)
    return config, vocabs, model.to(pick_device(device)).eval()


def source_ids(config: Config, vocab: TokenVocab, lines: list[str]) -> list[list[int]]:
    """Tokenise and encode source lines; say which tokens the vocabulary lacks."""
    tokens = [tokenize(line, config.tokens, config.lowercase) for line in lines]
    unseen = sorted({t for ts in tokens for t in ts if t not in vocab.index})
    if unseen:
        say(f"note: tokens not in the source vocabulary are read as <unk>: {' '.join(unseen)}")
    return [vocab.encode(ts) or [UNK] for ts in tokens]


def translate(
    run_dir: Path,
    lines: list[str],
    beam: int = 0,
    temperature: float = 0.0,
    seed: int = 1,
    heatmap: str = "",
    device: str = "auto",
    out=None,
    no_repeat_ngram: int | None = None,
) -> list[str]:
    """Print the translation of each line as it is made; return them.

    ``beam`` 0 takes the run's ``--beam``, ``no_repeat_ngram`` None its ``--no-repeat-ngram``;
    ``temperature`` > 0 samples instead; ``heatmap`` names a PNG of the first sentence's
    attention weights. A warning follows when the output is mostly one token.
    """
    out = out or sys.stdout
    config, (source_vocab, target_vocab), model = load_run(run_dir, device)
    if heatmap and model.decoder.attention is None:
        raise ValueError("this run has no attention (trained with --attention none): no heat map")
    sources = source_ids(config, source_vocab, lines)
    if no_repeat_ngram is not None:
        config.no_repeat_ngram = no_repeat_ngram
    guard = repeat_guard(config)
    search = search_for(beam or config.beam, config.length_penalty, temperature, seed, guard)
    texts, first, tokens = [], [], []
    for source in sources:  # one at a time, so each line is printed as soon as it is ready
        ids = translate_ids(model, [source], search, config.max_output)[0]
        first = first or [source, ids]
        tokens.append(target_vocab.decode(ids))
        texts.append(detokenize(tokens[-1], config.tokens))
        print(texts[-1], file=out, flush=True)
    if warning := one_token_warning(tokens):
        say(warning)
    if heatmap and first:
        save_heatmap(model, (source_vocab, target_vocab), *first, heatmap)
        say(f"attention heat map: {heatmap}")
    return texts


@torch.no_grad()
def attention_weights(model: Seq2Seq, source: list[int], output: list[int]) -> torch.Tensor:
    """(T+1, S) weights of each output step (the last one writes <eos>) over the source."""
    device = model.decoder.head.weight.device
    source_in, lengths = torch.tensor([source], device=device), torch.tensor([len(source)])
    _, weights = model(source_in, lengths, torch.tensor([[SOS] + output], device=device))
    if weights is None:
        raise ValueError("this run has no attention (trained with --attention none): no heat map")
    return weights[0].float().cpu()


def save_heatmap(model: Seq2Seq, vocabs, source: list[int], output: list[int], path) -> None:
    """The PNG of ``output``'s attention over ``source`` (ids), labelled with their tokens."""
    source_vocab, target_vocab = vocabs
    weights = attention_weights(model, source, output)
    words = [source_vocab.tokens[i] for i in source]
    plot_attention(weights, words, target_vocab.decode(output) + ["<eos>"], str(path))


def evaluate(run_dir: Path, data: str, device: str = "auto") -> dict:
    """Loss, token accuracy (teacher-forced), exact match and BLEU (the run's --beam) on data."""
    config, (source_vocab, target_vocab), model = load_run(run_dir, device)
    pairs = encode_pairs(
        tokenized(config, held_out_pairs(config, data)), source_vocab, target_vocab
    )
    unknown = sum(i == UNK for s, _ in pairs for i in s) / max(sum(len(s) for s, _ in pairs), 1)
    result = score_pairs(model, pairs)
    result.update(decoded_scores(model, pairs, target_vocab, config, config.beam, warn=True))
    return {**result, "pairs": len(pairs), "beam": config.beam, "unknown": unknown}
