"""Spoken corpora: synthesised with espeak-ng, or a manifest of the user's WAV files.

The synthesised corpus (:func:`generate`) says digit strings ("three one four one five",
3 to 7 digits) or short sentences from a small grammar ("the red cat sat on the mat",
61 words), in several espeak-ng voices (accents such as ``en-us`` or ``en-gb-scotland``)
and variants (``+m1`` .. ``+m7``, ``+f1`` .. ``+f4``: timbres), at several speeds and
pitches, with white or pink noise added at a signal-to-noise ratio drawn per utterance.
A speaker is an accent with a variant. British English is named ``en``, not ``en-gb``:
espeak-ng 1.51 ignores the variant after ``en-gb+``, so all its speakers would sound alike.

The test split holds voices out: its speakers have a variant (by default one male and one
female, chosen by the seed) or an accent (none by default) never heard in training or
validation; ``test_variants=()`` holds none out. Validation speakers are training
speakers. Speeds, pitches and noise are drawn from the same ranges in every split. Each
utterance is made from its own ``(seed, split, index)``, so any one can be made again
alone. ``out_dir/corpus.json`` records every choice, the held-out voices and each split's
size.

Manifests and their cached features live in :mod:`rnnkit.data.manifests`; their names are
also reachable from here, where the training task and the tests find the corpus.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rnnkit.data.audio import SAMPLE_RATE, resample, write_wav
from rnnkit.data.corpus import CorpusError
from rnnkit.data.manifests import (  # noqa: F401  (the corpus's public names)
    SILENCE,
    Entry,
    Loaded,
    Manifest,
    load_features,
    read_manifest,
    write_manifest,
)

NAME = "speech"
KINDS = ("digits", "sentences", "both")
SPLITS = ("train", "val", "test")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4")
ESPEAK_INSTALL = "apt-get install espeak-ng (the Debian package espeak-ng)"
MARGIN = 0.1  # seconds of silence kept before and after the speech when trimming

# the sentence grammar: five templates over these words
DETERMINERS = ("the", "a", "my", "your", "this")
ADJECTIVES = ("red", "green", "blue", "big", "small", "old", "new", "happy", "brown", "white")
NOUNS = ("cat", "dog", "bird", "box", "book", "car", "fish", "hat", "ball", "cup")
SAT = ("sat", "slept", "stood", "ran", "jumped")  # intransitive verbs
PREPOSITIONS = ("on", "under", "near", "behind", "in")
PLACES = ("mat", "bed", "table", "chair", "tree", "house", "wall", "door")
NAMES = ("anna", "peter", "maria", "john", "lucy")
FOUND = ("found", "saw", "took", "wanted", "painted", "lost")  # transitive verbs


def thing(rng: random.Random) -> str:
    """ "the red cat", "an old box"."""
    det, adjective = rng.choice(DETERMINERS), rng.choice(ADJECTIVES)
    det = "an" if det == "a" and adjective[0] in "aeiou" else det
    return f"{det} {adjective} {rng.choice(NOUNS)}"


def sentence(rng: random.Random) -> str:
    """A sentence of the grammar: 4 to 7 words."""
    where = f"{rng.choice(PREPOSITIONS)} the {rng.choice(PLACES)}"
    first, second = rng.sample(NAMES, 2)
    return rng.choice(
        [
            f"{thing(rng)} {rng.choice(SAT)} {where}",
            f"{first} {rng.choice(FOUND)} {thing(rng)}",
            f"where is {thing(rng)}",
            f"please bring me {thing(rng)}",
            f"{first} and {second} {rng.choice(SAT)} {where}",
        ]
    )


def digit_string(rng: random.Random) -> str:
    """3 to 7 digits as words: "three one four"."""
    return " ".join(rng.choice(DIGITS) for _ in range(rng.randint(3, 7)))


# --- synthesis ---


@dataclass(frozen=True)
class Utterance:
    """Everything that makes one synthesised utterance."""

    split: str
    index: int
    text: str  # the transcript, as spoken
    accent: str  # espeak-ng voice
    variant: str  # espeak-ng variant, the timbre
    speed: int  # words per minute (espeak-ng -s)
    pitch: int  # 0 to 99 (espeak-ng -p)
    peak: float  # the speech's loudest sample, before noise
    noise: str  # white or pink
    snr_db: float | None  # speech power over noise power; None: no noise

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}"


@dataclass(frozen=True)
class Plan:
    """The choices of a synthesised corpus, as written to corpus.json."""

    seed: int = 1
    kind: str = "digits"  # digits, sentences or both (half and half)
    accents: tuple[str, ...] = ACCENTS
    variants: tuple[str, ...] = VARIANTS
    test_accents: tuple[str, ...] = ()  # heard only in the test split
    test_variants: tuple[str, ...] = ()  # heard only in the test split
    speeds: tuple[int, int] = (130, 200)  # words per minute, drawn uniformly
    pitches: tuple[int, int] = (30, 70)
    peaks: tuple[float, float] = (0.3, 0.9)
    snr_db: tuple[float, float] | None = (15.0, 35.0)  # None: clean speech
    noises: tuple[str, ...] = ("white", "pink")
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self):
        if self.kind not in KINDS or not set(self.noises) <= {"white", "pink"}:
            raise ValueError(
                f"expected kind in {KINDS} and noises white or pink, "
                f"got {self.kind!r} and {self.noises}"
            )
        for name in ("speeds", "pitches", "peaks", "snr_db"):
            low, high = getattr(self, name) or (0, 0)
            if low > high:
                raise ValueError(f"{name} is a (low, high) range, got {getattr(self, name)}")
        self.speakers("train")  # some left, or an error

    def speakers(self, split: str) -> list[tuple[str, str]]:
        """(accent, variant) pairs heard in a split; all of them in each when none is held."""
        pairs = [(a, v) for a in self.accents for v in self.variants]
        held = [(a, v) for a, v in pairs if a in self.test_accents or v in self.test_variants]
        if not held:
            return pairs
        speakers = held if split == "test" else [p for p in pairs if p not in held]
        if not speakers:
            raise ValueError(f"no {split} speakers left: every voice is held out for the test")
        return speakers

    def utterance(self, split: str, index: int) -> Utterance:
        """Utterance ``index`` of a split: the same arguments always give the same one."""
        rng = random.Random(f"speech:{self.seed}:{split}:{index}")
        sentences = self.kind == "sentences" or (self.kind == "both" and rng.random() < 0.5)
        text = sentence(rng) if sentences else digit_string(rng)
        accent, variant = rng.choice(self.speakers(split))
        snr = None if self.snr_db is None else round(rng.uniform(*self.snr_db), 2)
        return Utterance(
            split,
            index,
            text,
            accent,
            variant,
            rng.randint(*self.speeds),
            rng.randint(*self.pitches),
            round(rng.uniform(*self.peaks), 3),
            rng.choice(self.noises),
            snr,
        )


def held_out_variants(seed: int, variants: tuple[str, ...] = VARIANTS) -> tuple[str, ...]:
    """One male and one female variant (``m*``, ``f*``), chosen by the seed, for the test."""
    rng = random.Random(f"held-out-variants:{seed}")
    by_sex = [[v for v in variants if v[0] == sex] for sex in "mf"]
    return tuple(rng.choice(some) for some in by_sex if some)


def espeak() -> str:
    """The espeak-ng program, or an error saying how to install it."""
    found = shutil.which("espeak-ng")
    if found is None:
        raise CorpusError(f"synthesising speech needs espeak-ng, not found: {ESPEAK_INSTALL}")
    return found


def synthesise(program: str, u: Utterance) -> tuple[np.ndarray, int]:
    """(samples in [-1, 1], sample rate) of espeak-ng saying ``u.text``."""
    command = [program, "-v", f"{u.accent}+{u.variant}", "-s", str(u.speed), "-p", str(u.pitch)]
    done = subprocess.run([*command, "--stdout", u.text], capture_output=True, check=False)
    raw = done.stdout
    start = raw.find(b"data") + 8  # espeak-ng writes a 44-byte header with no true sizes
    if done.returncode != 0 or raw[:4] != b"RIFF" or start < 8:
        message = done.stderr.decode(errors="replace").strip()
        raise CorpusError(f"espeak-ng failed on {u.name} ({' '.join(command)}): {message}")
    rate = int.from_bytes(raw[24:28], "little")
    samples = np.frombuffer(raw[start : start + (len(raw) - start) // 2 * 2], dtype="<i2")
    return samples.astype(np.float32) / 32768, rate


def trimmed(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """``wave`` without its silence beyond MARGIN seconds at either end."""
    loud = np.flatnonzero(np.abs(wave) > 1e-3)
    if loud.size == 0:
        return wave
    margin = round(MARGIN * sample_rate)
    return wave[max(0, loud[0] - margin) : loud[-1] + margin + 1]


def noise(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power white or pink (power falling as 1/f) noise."""
    white = rng.standard_normal(size)
    if kind == "pink":
        spectrum = np.fft.rfft(white)
        spectrum[1:] /= np.sqrt(np.arange(1, spectrum.size))
        spectrum[0] = 0
        white = np.fft.irfft(spectrum, n=size)
    return white / max(np.sqrt(np.mean(white**2)), 1e-12)


def render(program: str, plan: Plan, u: Utterance) -> np.ndarray:
    """The finished wave of an utterance: spoken, trimmed, resampled, scaled, noised."""
    samples, rate = synthesise(program, u)
    wave = resample(trimmed(samples, rate), rate, plan.sample_rate).astype(np.float64)
    wave *= u.peak / max(np.abs(wave).max(), 1e-9)
    if u.snr_db is not None:
        digest = hashlib.sha256(f"noise:{plan.seed}:{u.name}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        power = np.mean(wave**2)
        wave += noise(u.noise, wave.size, rng) * np.sqrt(power / 10 ** (u.snr_db / 10))
        wave /= max(1.0, np.abs(wave).max() / 0.99)  # no clipping; the ratio stays
    return wave.astype(np.float32)


def espeak_version(program: str) -> str:
    done = subprocess.run([program, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def prepare(out_dir: Path, plan: Plan, hours: float) -> Path:
    """``out_dir/wav``, emptied of an earlier corpus's files (never of anyone else's), and
    a corpus.json without sizes until the corpus is whole: an interrupted run leaves no
    manifest and can be run again over its own files."""
    wav_dir = out_dir / "wav"
    old = sorted(wav_dir.glob("*")) if wav_dir.is_dir() else []
    if old and not (out_dir / "corpus.json").exists():
        raise CorpusError(f"{wav_dir} already holds files that no corpus.json describes")
    for path in old + [out_dir / f"{split}.csv" for split in SPLITS]:
        if path.suffix in (".wav", ".csv") and path.stem.split("-")[0] in SPLITS:
            path.unlink(missing_ok=True)
    wav_dir.mkdir(parents=True, exist_ok=True)
    describe(out_dir / "corpus.json", plan, hours, {}, "")
    return wav_dir


def synthesise_split(pool, program, plan, split, seconds, wav_dir):
    """Write utterances of a split until they last ``seconds``; (manifest rows, seconds)."""
    rows, total, index = [], 0.0, 0
    while total < seconds:
        batch = min(32, max(4, math.ceil((seconds - total) / 2)))  # about 2 s an utterance
        chunk = [plan.utterance(split, i) for i in range(index, index + batch)]
        for u, wave in zip(chunk, pool.map(lambda u: render(program, plan, u), chunk), strict=True):
            if total >= seconds:
                break
            write_wav(wav_dir / f"{u.name}.wav", wave, plan.sample_rate)
            rows.append((f"wav/{u.name}.wav", u.text))
            total += wave.size / plan.sample_rate
        index += batch
    return rows, total


def generate(
    out_dir: str | Path,
    hours: float = 0.1,
    seed: int = 1,
    kind: str = "digits",
    voices: tuple[str, ...] = ACCENTS,
    variants: tuple[str, ...] = VARIANTS,
    test_variants: tuple[str, ...] | None = None,
    test_voices: tuple[str, ...] = (),
    shares: tuple[float, float, float] = (0.8, 0.1, 0.1),
    workers: int = 2,
    **choices,
) -> dict[str, Path]:
    """Synthesise ``hours`` of speech into ``out_dir``; split name -> manifest path.

    ``test_variants`` (None: :func:`held_out_variants`) and ``test_voices`` are heard only
    in the test split; ``shares`` divide the hours among train, val and test; ``choices``
    are further :class:`Plan` fields (speeds, pitches, peaks, snr_db, noises).
    """
    if hours <= 0 or len(shares) != 3 or min(shares) <= 0:
        raise ValueError(f"expected hours > 0 and three positive shares, got {hours}, {shares}")
    held = held_out_variants(seed, variants) if test_variants is None else test_variants
    plan = Plan(
        seed=seed,
        kind=kind,
        accents=tuple(voices),
        variants=tuple(variants),
        test_accents=tuple(test_voices),
        test_variants=tuple(held),
        **choices,
    )
    program, out_dir = espeak(), Path(out_dir)
    wav_dir = prepare(out_dir, plan, hours)
    manifests, sizes = {}, {}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for split, share in zip(SPLITS, shares, strict=True):
            seconds = hours * 3600 * share / sum(shares)
            rows, spoken = synthesise_split(pool, program, plan, split, seconds, wav_dir)
            manifests[split] = write_manifest(out_dir / f"{split}.csv", rows)
            sizes[split] = {"utterances": len(rows), "seconds": round(spoken, 1)}
    describe(out_dir / "corpus.json", plan, hours, sizes, espeak_version(program))
    return manifests


def describe(path: Path, plan: Plan, hours: float, sizes: dict, version: str) -> None:
    """Write corpus.json: the plan, what the test holds out, and each split's size."""
    about = {
        "hours": hours,
        "plan": asdict(plan),
        "held_out": "test speakers have a variant in plan.test_variants or an accent in "
        "plan.test_accents; no train or val utterance does"
        if plan.test_variants or plan.test_accents
        else "nothing: every split hears every speaker",
        "splits": sizes,
        "espeak_ng": version,
    }
    path.write_text(json.dumps(about, indent=1) + "\n", encoding="utf-8")
