"""Image captioning, one to many: an image (or its feature vector) in, a caption out.

A convolutional encoder (:class:`rnnkit.models.vision.VGGEncoder`, trained jointly) or a
precomputed ``.npy`` row turns the image into a feature vector f; f sets the decoder's
initial state, h_0 = tanh(W_h f + b_h) (and c_0 likewise for an LSTM), and with
``--feed-image`` is also the decoder's input at a step before <sos>, as Show and Tell feeds
the image once at t = -1 (Vinyals et al. 2015, section 3.1). The decoder is the seq2seq one
(:class:`rnnkit.models.seq2seq.Decoder`); with the CNN it also attends over the cells of the CNN's
last maps (``--attention``, :class:`rnnkit.models.vision.Captioner`). Training uses teacher
forcing; captions are written greedily, by beam search or by sampling with
:mod:`rnnkit.models.decode`, through the translation task's ``search_for``.

Data: generated scenes (:mod:`rnnkit.data.scenes`, whose test split holds things at places
never seen in training), or a folder of images with ``captions.csv``
(:mod:`rnnkit.data.images`). Each batch holds whole images with all their captions, so an
image goes through the CNN once per step. Scores: exact match (the caption equals one of
the image's references) and corpus BLEU-4 against all references (sacrebleu); after
training, ``test.json`` and ``gallery.png`` in the run directory.

Shape letters: B batch, T caption length, V vocabulary, F feature size, L layers, H hidden.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from rnnkit.data import images as folders
from rnnkit.data import scenes
from rnnkit.data.files import write_json
from rnnkit.data.pairs import EOS, PAD, SOS, TokenVocab, detokenize, pad, tokenize
from rnnkit.data.parts import part
from rnnkit.models.vision import Captioner, Captions, VGGEncoder, plot_gallery, to_tensor
from rnnkit.tasks import run_config
from rnnkit.tasks.translate import search_for
from rnnkit.training import config as configuration
from rnnkit.training.distributed import ALONE
from rnnkit.training.trainer import MODEL_FILE, Task, TrainConfig, Trainer, load_model, pick_device

NAME = "caption"
Cell = Literal["lstm", "gru", "rnn", "peephole"]


@dataclass
class Config(TrainConfig):
    """``rnnkit train caption``; the defaults train on generated scenes for 10 minutes."""

    data: str = "scenes"  # scenes (generated), or a folder of images with captions.csv
    features: str = ""  # .npy of precomputed rows, one per image of the folder (no CNN)
    image_size: int = 48  # images are drawn, or cropped and resized, to this side in pixels
    train_scenes: int = 20_000  # scenes: images in the training split (3 captions each)
    val_scenes: int = 500  # scenes: images in the validation split
    test_scenes: int = 1000  # scenes: images in the test split (unseen shape-colour pairs)
    val_fraction: float = 0.1  # folder: share of the images held out for validation
    test_fraction: float = 0.1  # folder: share of the images held out for the final test
    lowercase: bool = True  # lower-case captions before tokenising into words
    min_freq: int = 1  # words seen fewer times in training captions become <unk>
    batch_size: int = 32  # images per batch, each with every one of its captions
    blocks: int = 4  # VGG blocks, each ending in a 2x2 max-pool (48 px -> a 3x3 grid)
    width: int = 16  # channels of the first block; each block doubles them
    convs: int = 1  # 3x3 convolutions per block
    batch_norm: bool = True  # batch norm after each convolution
    feature_size: int = 256  # the feature vector f (set from the .npy with --features)
    feed_image: bool = False  # also feed f as the input of a step before <sos>
    attention: Literal["none", "bahdanau", "luong"] = "luong"  # over the CNN's last grid
    cell: Cell = "lstm"  # recurrent cell of the decoder
    embedding: int = 64  # word embedding size
    hidden: int = 256  # decoder hidden size
    layers: int = 1  # stacked decoder layers
    dropout: float = 0.0  # on features, embeddings, between layers, before the output; scenes
    # never repeat, so they need none: raise it (0.3) for a small photo set such as Flickr8k
    teacher_forcing: float = 1.0  # probability of feeding the known previous word
    beam: int = 1  # beam width of `rnnkit caption` and of the test scores (1: greedy)
    length_penalty: float = 1.0  # beam search ranks by log p / length ** this
    max_output: int = 40  # a caption stops after this many words if <eos> never comes
    val_images: int = 300  # validation images captioned greedily at each evaluation (0: all)
    gallery: int = 12  # test images in gallery.png
    precision: Literal["auto", "fp32", "bf16"] = "fp32"  # fp32: the same numbers everywhere
    threads: int = 0  # CPU threads for torch (0: torch's default)
    lr: float = 5e-3  # peak learning rate
    minutes: float = 10.0  # stop after this much training time (0: no limit)
    eval_every: int = 250  # evaluate on validation every this many steps


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- data ---


@dataclass
class Examples:
    """One split: each image's reference captions, and its pixels or its feature row."""

    references: list[list[str]]  # the captions of each image
    pixels: Callable[[list[int]], np.ndarray] | None = None  # -> uint8 (B, S, S, 3), for the CNN
    features: np.ndarray | None = None  # (N, F) precomputed rows, when it is not

    def __len__(self) -> int:
        return len(self.references)

    def inputs(self, indices: list[int]) -> Tensor:
        """What the model reads: feature rows (B, F) or images (B, 3, S, S)."""
        if self.features is not None:
            return torch.from_numpy(self.features[indices])
        return to_tensor(self.pixels(indices))


def scene_examples(config: Config, split: str, count: int) -> Examples:
    if config.features:
        raise ValueError("--features needs a folder of images (--data DIR), not scenes")
    made = scenes.SceneSplit(config.seed, split, count, config.image_size)
    return Examples([made.captions(i) for i in range(count)], made.pixels)


def folder_examples(config: Config, data: str) -> list[Examples]:
    """The (train, val, test) parts of a folder, split by image."""
    folder = folders.load_folder(data, config.image_size, with_pixels=not config.features)
    if folder.bad:
        say(folders.bad_images_summary(folder.bad))
    rows = folders.load_features(config.features, len(folder)) if config.features else None
    parts = folders.split_images(
        len(folder), config.val_fraction, config.test_fraction, config.seed
    )
    return [subset(folder, rows, part) for part in parts]


def subset(folder: folders.ImageFolder, rows: np.ndarray | None, part: list[int]) -> Examples:
    references = [folder.references[i] for i in part]
    if rows is not None:
        return Examples(references, features=rows[part])
    return Examples(references, pixels=lambda indices: folder.pixels[[part[i] for i in indices]])


def splits(config: Config) -> list[Examples]:
    """(train, val, test) examples of the configured data."""
    if config.data == scenes.NAME:
        counts = (config.train_scenes, config.val_scenes, config.test_scenes)
        names = ("train", "val", "test")
        return [scene_examples(config, s, n) for s, n in zip(names, counts, strict=True)]
    return folder_examples(config, config.data)


def words(config: Config, text: str) -> list[str]:
    return tokenize(text, "word", config.lowercase)


def caption_pairs(config: Config, examples: Examples, vocab: TokenVocab):
    """(image index, caption ids) for every caption of every image."""
    return [
        (i, vocab.encode(words(config, text)))
        for i, texts in enumerate(examples.references)
        for text in texts
    ]


# --- model ---


def build_model(config: Config, vocab_size: int) -> Captioner:
    encoder = None
    if not config.features:
        sizes = dict(image_size=config.image_size, blocks=config.blocks, width=config.width)
        encoder = VGGEncoder(
            **sizes, convs=config.convs, features=config.feature_size, batch_norm=config.batch_norm
        )
    fields = "feature_size embedding hidden layers cell attention feed_image dropout".split()
    return Captioner(vocab_size, encoder, **{f: getattr(config, f) for f in fields})


# --- loss, decoding, scores ---


def device_of(model: Captioner) -> torch.device:
    return model.decoder.head.weight.device


def captions(examples: Examples, pairs, teacher_forcing: float = 1.0) -> Captions:
    """The batch of the (image, caption ids) ``pairs``: each image's inputs once."""
    images = sorted({i for i, _ in pairs})
    row = {image: r for r, image in enumerate(images)}
    return Captions(
        examples.inputs(images),
        torch.tensor([row[i] for i, _ in pairs]),
        pad([[SOS] + ids for _, ids in pairs]),  # (B, T)
        pad([ids + [EOS] for _, ids in pairs]),  # (B, T)
        teacher_forcing,
    )


@torch.no_grad()
def mean_loss(model: Captioner, examples: Examples, pairs, batch_size=256, world=ALONE) -> float:
    """Nats per caption word over ``pairs``; under torchrun each process its share."""
    total, count = 0.0, 0
    for start in world.share(range(0, len(pairs), batch_size)):
        loss = model.loss(captions(examples, pairs[start : start + batch_size]))
        total, count = total + loss.total.item(), count + loss.weight
    total, count = world.sum(total, count)
    return total / count


@torch.no_grad()
def caption_ids(model, examples: Examples, indices, search=None, max_output=40, batch_size=128):
    """Caption ids (without <eos>) of the images ``indices`` (greedy by default)."""
    search, out = search or search_for(), []
    for start in range(0, len(indices), batch_size):
        chunk = list(indices[start : start + batch_size])
        state = model.start(*model.encode(examples.inputs(chunk).to(device_of(model))))
        found = search(model.step, state, len(chunk), SOS, EOS, max_output)
        out += [[t for t in row if t not in (EOS, PAD)] for row in found.tokens.tolist()]
    return out


def match_scores(hypotheses: list[list[str]], references: list[list[list[str]]]) -> dict:
    """Exact match (equal to any reference) and corpus BLEU-4 against every reference."""
    import sacrebleu

    exact = sum(h in refs for h, refs in zip(hypotheses, references, strict=True))
    most = max(len(refs) for refs in references)
    # sacrebleu wants as many reference streams as the most captioned image has; repeating
    # a reference changes neither clipped counts nor the closest reference length
    streams = [
        [detokenize(refs[min(k, len(refs) - 1)]) for refs in references] for k in range(most)
    ]
    bleu = sacrebleu.corpus_bleu([detokenize(h) for h in hypotheses], streams)
    return {"exact": exact / len(references), "bleu": bleu.score}


def decoded_scores(model, examples, vocab, config: Config, count=0, beam=1, world=ALONE):
    """Exact match and BLEU of the first ``count`` images (0: all), and what was written;
    under torchrun each process captions its share of the images."""
    indices = range(min(count, len(examples)) if count else len(examples))
    search = search_for(beam, config.length_penalty)
    written = world.map(
        lambda some: caption_ids(model, examples, some, search, config.max_output), indices
    )
    found = [vocab.decode(ids) for ids in written]
    references = [[words(config, t) for t in examples.references[i]] for i in indices]
    return match_scores(found, references), [detokenize(f) for f in found]


# --- training ---


def build_task(config: Config, vocab: TokenVocab, train_set: Examples, val_set: Examples) -> Task:
    torch.manual_seed(config.seed)
    model = build_model(config, len(vocab))
    pairs = caption_pairs(config, train_set, vocab)
    captions_of = [[] for _ in range(len(train_set))]  # each image's pairs
    for pair in pairs:
        captions_of[pair[0]].append(pair)
    val_pairs = caption_pairs(config, val_set, vocab)
    per_epoch = math.ceil(len(train_set) / config.batch_size)
    orders = {}  # the shuffled images of the current epoch

    def batch(step: int, rank: int, size: int) -> Captions:
        epoch, index = divmod(step, per_epoch)
        if epoch not in orders:
            orders.clear()
            order = random.Random(f"{config.seed}:{epoch}").sample(
                range(len(train_set)), len(train_set)
            )
            orders[epoch] = order
        chosen = orders[epoch][index * config.batch_size : (index + 1) * config.batch_size]
        chosen = part(chosen, rank, size)  # its images, with all their captions
        pairs = [pair for image in chosen for pair in captions_of[image]]
        return captions(train_set, pairs, config.teacher_forcing)

    def evaluate(model, world) -> dict:
        scores, _ = decoded_scores(model, val_set, vocab, config, config.val_images, 1, world)
        val_loss = mean_loss(model, val_set, val_pairs, world=world)
        return {"val_loss": val_loss, "val_exact": scores["exact"], "val_bleu": scores["bleu"]}

    return Task(model, batch, evaluate, per_epoch, "caption words", "loss (nats per word)")


def train(config: Config, resume: bool = False, progress=None) -> Trainer:
    """Train (or with ``resume``, continue) the run in ``config.out``; score its test split."""
    run_dir = Path(config.out or Path("runs") / f"{NAME}-{time.strftime('%Y%m%d-%H%M%S')}")
    config.out = str(run_dir)
    train_set, val_set, test_set = splits(config)
    if config.features:
        config.feature_size = int(train_set.features.shape[1])
        if config.attention != "none":
            say("note: a feature row has no grid of cells to attend over: no attention")
            config.attention = "none"
    texts = [words(config, t) for refs in train_set.references for t in refs]
    vocab = (
        TokenVocab.load(run_dir / "vocab.json")
        if resume
        else TokenVocab.build(texts, config.min_freq)
    )
    say(f"{len(train_set)} training images, {len(texts)} captions, {len(vocab)} words")
    trainer = Trainer(config, build_task(config, vocab, train_set, val_set), run_dir, progress)
    if resume:
        trainer.restore()
    else:
        configuration.save(config, run_dir / "config.json", task=NAME)
        vocab.save(run_dir / "vocab.json")
    trainer.fit()
    if trainer.world.rank == 0 and len(test_set) and not trainer.interrupted:  # one tests
        report_test(run_dir, test_set)
    return trainer


def report_test(run_dir: Path, test_set: Examples) -> dict:
    """Scores of the best model on the test split (test.json) and a gallery (gallery.png)."""
    config, vocab, model = load_run(run_dir, "cpu")
    scores, found = decoded_scores(model, test_set, vocab, config, beam=config.beam)
    scores = {**scores, "images": len(test_set), "beam": config.beam}
    write_json(run_dir / "test.json", scores, indent=2)
    say(f"test: exact match {scores['exact']:.1%}, BLEU-4 {scores['bleu']:.1f}")
    shown = min(config.gallery, len(test_set))
    if shown and test_set.pixels is not None:
        pixels = test_set.pixels(list(range(shown)))
        refs = [[detokenize(words(config, t)) for t in r] for r in test_set.references[:shown]]
        plot_gallery(pixels, found[:shown], refs, run_dir / "gallery.png")  # texts as compared
        say(f"gallery: {run_dir / 'gallery.png'}")
    return scores


# --- using a trained run ---


def load_run(run_dir: Path, device: str = "auto"):
    """The config, vocabulary and best model of a run directory."""
    run_dir = Path(run_dir)
    config = run_config(run_dir, Config)
    vocab = TokenVocab.load(run_dir / "vocab.json")
    model = build_model(config, len(vocab))
    load_model(model, run_dir / MODEL_FILE)
    return config, vocab, model.to(pick_device(device)).eval()


def inputs_of(config: Config, paths: list[str]) -> Examples:
    """Images (resized as in training) or, for a features run, .npy rows, from files."""
    if config.features:
        rows = np.concatenate([folders.load_features(p) for p in paths])
        return Examples([[""]] * len(rows), features=rows)
    pixels = []
    for path in paths:
        image, why = folders.load_image(Path(path), config.image_size)
        if image is None:
            raise ValueError(f"{path}: {why}")
        pixels.append(image)
    array = np.stack(pixels)
    return Examples([[""]] * len(paths), pixels=lambda indices: array[indices])


def caption(run_dir, paths, beam=0, temperature=0.0, seed=1, device="auto", out=None) -> list[str]:
    """Print ``path: caption`` for each image (a features run reads .npy rows instead)."""
    out = out or sys.stdout
    config, vocab, model = load_run(run_dir, device)
    examples = inputs_of(config, paths)
    search = search_for(beam or config.beam, config.length_penalty, temperature, seed)
    ids = caption_ids(model, examples, range(len(examples)), search, config.max_output)
    texts = [detokenize(vocab.decode(row)) for row in ids]
    names = paths if len(paths) == len(texts) else [f"{paths[0]}[{i}]" for i in range(len(texts))]
    for name, text in zip(names, texts, strict=True):
        print(f"{name}: {text}", file=out, flush=True)
    return texts


def evaluate(run_dir: Path, data: str, device: str = "auto") -> dict:
    """Loss, exact match and BLEU-4 (the run's --beam): scenes' test split, or a whole folder."""
    config, vocab, model = load_run(run_dir, device)
    if data == scenes.NAME:
        examples = scene_examples(config, "test", config.test_scenes)
    else:
        folder = folders.load_folder(data, config.image_size, with_pixels=not config.features)
        if folder.bad:
            say(folders.bad_images_summary(folder.bad))
        rows = folders.load_features(config.features, len(folder)) if config.features else None
        examples = subset(folder, rows, list(range(len(folder))))
    scores, _ = decoded_scores(model, examples, vocab, config, beam=config.beam)
    loss = mean_loss(model, examples, caption_pairs(config, examples, vocab))
    return {"loss": loss, **scores, "images": len(examples), "beam": config.beam}
