"""The spoken corpus and manifests: what is said is what is written, test voices are unheard
in training, noise is at the ratio asked for, and bad files are named and skipped."""

import csv
import dataclasses
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.io import wavfile

from rnnkit.data import manifests, speech
from rnnkit.data.audio import LogMel, read_wav, write_wav
from rnnkit.data.corpus import CorpusError
from rnnkit.tasks import speech_features
from rnnkit.tasks.speech import Config as SpeechConfig

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (Debian package espeak-ng; `make system` installs it)",
)
SENTENCE_WORDS = set(
    "the a an my your this red green blue big small old new happy brown white cat dog bird box "
    "book car fish hat ball cup sat slept stood ran jumped on under near behind in mat bed "
    "table chair tree house wall door anna peter maria john lucy found saw took wanted painted "
    "lost where is please bring me and".split()
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("speech")
    return out, speech.generate(out, hours=0.006, seed=3, kind="both")  # about 22 s of speech


@needs_espeak
def test_manifests_list_16_khz_mono_files_and_their_words(corpus):
    out, manifests = corpus
    assert set(manifests) == {"train", "val", "test"}
    kinds = set()
    for split, path in manifests.items():
        rows = list(csv.reader(path.open()))
        assert rows[0] == ["path", "transcript"] and len(rows) > 1
        for wav, text in rows[1:]:
            assert wav.startswith(f"wav/{split}-")
            rate, samples = wavfile.read(out / wav)
            assert (rate, samples.dtype, samples.ndim) == (16000, np.int16, 1)
            assert 0.5 < samples.size / rate < 8, f"{wav}: {samples.size / rate:.1f} s"
            words = text.split()
            digits = set(words) <= set(speech.DIGITS) and 3 <= len(words) <= 7
            assert digits or set(words) <= SENTENCE_WORDS, text
            kinds.add(digits)
    assert kinds == {True, False}  # kind="both": digit strings and sentences


@needs_espeak
def test_splits_last_the_hours_asked_and_corpus_json_says_so(corpus):
    out, manifests = corpus
    about = json.loads((out / "corpus.json").read_text())
    assert about["plan"]["test_variants"] == list(speech.held_out_variants(3))
    for split, share in zip(speech.SPLITS, (0.8, 0.1, 0.1), strict=True):
        seconds = sum(read_wav(p).size for p, _ in speech.read_manifest(manifests[split])) / 16000
        assert seconds == pytest.approx(about["splits"][split]["seconds"], abs=0.1)
        assert 0.006 * 3600 * share <= seconds < 0.006 * 3600 * share + 8  # one utterance over


@needs_espeak
def test_any_utterance_can_be_made_again_alone(corpus):
    out, _ = corpus
    plan = speech.Plan(seed=3, kind="both", test_variants=speech.held_out_variants(3))
    u = plan.utterance("train", 2)
    again = speech.render(speech.espeak(), plan, u)
    np.testing.assert_allclose(read_wav(out / "wav" / "train-000002.wav"), again, atol=1 / 32768)


def test_test_voices_are_never_heard_in_training():
    held = speech.held_out_variants(7)
    assert len(held) == 2 and {v[0] for v in held} == {"m", "f"}  # one male, one female
    plan = speech.Plan(seed=7, test_variants=held, test_accents=("en-029",))
    heard = {split: set() for split in speech.SPLITS}
    for split in speech.SPLITS:
        for index in range(300):
            u = plan.utterance(split, index)
            heard[split].add((u.accent, u.variant))
    for accent, variant in heard["train"] | heard["val"]:
        assert variant not in held and accent != "en-029"
    assert all(v in held or a == "en-029" for a, v in heard["test"])
    assert {a for a, _ in heard["train"]} == set(speech.ACCENTS) - {"en-029"}


def test_sentences_come_from_the_small_grammar():
    rng = random.Random(0)
    sentences = [speech.sentence(rng) for _ in range(500)]
    words = {w for s in sentences for w in s.split()}
    assert words <= SENTENCE_WORDS and len(SENTENCE_WORDS) == 61
    assert len(words) > 55  # the grammar reaches nearly all its words in 500 sentences
    assert all(4 <= len(s.split()) <= 7 for s in sentences)
    assert "an old" in " ".join(sentences) and "a old" not in " ".join(sentences)


@needs_espeak
@pytest.mark.parametrize("kind", ["white", "pink"])
def test_noise_is_added_at_the_ratio_asked(kind):
    plan = speech.Plan(seed=5)
    u = dataclasses.replace(plan.utterance("train", 0), noise=kind, snr_db=12.0)
    program = speech.espeak()
    clean = speech.render(program, plan, dataclasses.replace(u, snr_db=None)).astype(float)
    noisy = speech.render(program, plan, u).astype(float)
    scale = noisy @ clean / (clean @ clean)  # 1 unless the sum was scaled down from clipping
    residual = noisy - scale * clean
    snr = 10 * np.log10(np.mean((scale * clean) ** 2) / np.mean(residual**2))
    assert snr == pytest.approx(12.0, abs=0.3)
    assert np.abs(noisy).max() <= 0.99 + 1e-6


def test_pink_noise_puts_more_power_low_than_white():
    rng = np.random.default_rng(0)
    white, pink = speech.noise("white", 16000, rng), speech.noise("pink", 16000, rng)
    for wave in (white, pink):
        assert np.mean(wave**2) == pytest.approx(1.0)

    def low_share(wave):  # share of the power below 1 kHz, of 8 kHz
        power = np.abs(np.fft.rfft(wave)) ** 2
        return power[:1000].sum() / power.sum()

    assert low_share(white) == pytest.approx(1 / 8, abs=0.02)
    assert low_share(pink) > 0.6  # 1/f: log(1000) / log(8000) of the power


def test_missing_espeak_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(CorpusError, match="needs espeak-ng.*Debian package espeak-ng"):
        speech.generate(tmp_path, hours=0.001)
    assert not (tmp_path / "wav").exists()


def test_a_folder_of_someone_elses_files_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(speech.shutil, "which", lambda name: "/usr/bin/espeak-ng")
    (tmp_path / "wav").mkdir()
    (tmp_path / "wav" / "train-000000.wav").write_bytes(b"mine")
    with pytest.raises(CorpusError, match="no corpus.json describes"):
        speech.generate(tmp_path, hours=0.001)
    assert (tmp_path / "wav" / "train-000000.wav").read_bytes() == b"mine"


# --- manifests and features ---


def tone(seconds: float, rate: int = 16000, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * 440 * np.arange(round(seconds * rate)) / rate)


def test_manifest_paths_resolve_beside_it_and_bad_rows_are_named(tmp_path):
    write_wav(tmp_path / "a.wav", tone(0.5))
    (tmp_path / "sub").mkdir()
    write_wav(tmp_path / "sub" / "b.wav", tone(0.5))
    good = tmp_path / "good.csv"
    good.write_text(f'path,transcript\na.wav,"hello,  world "\n\n{tmp_path}/sub/b.wav,two\n')
    manifest = speech.read_manifest(good)
    assert len(manifest) == 2
    assert list(manifest) == [(tmp_path / "a.wav", "hello, world"), (tmp_path / "sub/b.wav", "two")]

    bad = tmp_path / "bad.csv"
    bad.write_text("path,transcript\na.wav,fine\nb.wav\na.wav,  \nnowhere.wav,lost\n")
    with pytest.raises(CorpusError) as caught:
        speech.read_manifest(bad)
    message = str(caught.value)
    assert "3 bad rows" in message and "line 3: 1 columns" in message
    assert "line 4: empty transcript" in message and "line 5: no such file" in message
    (tmp_path / "headless.csv").write_text("a.wav,hello\n")
    with pytest.raises(CorpusError, match="path,transcript"):
        speech.read_manifest(tmp_path / "headless.csv")


def mixed_manifest(tmp_path):
    """Two good files (one stereo at 44.1 kHz), a silent, a too short and a broken one."""
    write_wav(tmp_path / "good.wav", tone(0.3))
    stereo = (np.stack([tone(0.3, 44100), tone(0.3, 44100)], axis=1) * 32767).astype(np.int16)
    wavfile.write(tmp_path / "stereo.wav", 44100, stereo)
    write_wav(tmp_path / "silent.wav", np.zeros(8000))
    write_wav(tmp_path / "short.wav", tone(0.01))
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    names = ["good", "silent", "stereo", "short", "broken"]
    rows = "".join(f"{n}.wav,{n} words\n" for n in names)
    (tmp_path / "m.csv").write_text("path,transcript\n" + rows)
    return tmp_path / "m.csv"


def test_unreadable_and_silent_files_are_skipped_with_reasons(tmp_path):
    loaded = speech.load_features(mixed_manifest(tmp_path), cache=False)
    assert loaded.transcripts == ["good words", "stereo words"]
    assert [f.shape for f in loaded.features] == [(28, 40), (28, 40)]  # 1 + (4800 - 400) // 160
    reasons = {p.name: why for p, why in loaded.skipped}
    assert reasons["silent.wav"] == "silent"
    assert reasons["short.wav"] == "shorter than one 25 ms frame"
    assert reasons["broken.wav"].startswith("not a readable WAV file")
    assert loaded.warning().startswith("skipped 3 of 5 files: ")
    assert "silent.wav (silent)" in loaded.warning()
    good, stereo = loaded.features
    loud = good > good.max() - np.log(1e4)  # within 40 dB of the tone's band
    np.testing.assert_allclose(stereo[loud], good[loud], atol=0.05)


def test_features_are_cached_beside_the_manifest_until_a_file_changes(tmp_path, monkeypatch):
    manifest = mixed_manifest(tmp_path)
    logmel = LogMel(n_mels=20)
    first = speech.load_features(manifest, logmel)
    (cached,) = tmp_path.glob("m.logmel-*.npz")
    with np.load(cached, allow_pickle=False) as saved:  # nothing in it needs unpickling
        assert saved["frames"].shape == (56, 20)

    def no_extraction(*args):
        raise AssertionError("features were computed again instead of read from the cache")

    with monkeypatch.context() as patch:
        patch.setattr(manifests, "extract", no_extraction)
        again = speech.load_features(manifest, logmel)
    assert again.skipped == first.skipped and again.transcripts == first.transcripts
    for a, b in zip(again.features, first.features, strict=True):
        np.testing.assert_array_equal(a, b)

    write_wav(tmp_path / "good.wav", tone(0.5))  # a changed file makes the cache stale
    changed = speech.load_features(manifest, logmel)
    assert changed.features[0].shape == (48, 20)
    assert len(list(tmp_path.glob("m.logmel-*.npz"))) == 1  # replaced, not added to


@needs_espeak
def test_rnnkit_data_speech_writes_a_corpus(tmp_path, capsys):
    from rnnkit.cli import main

    out = tmp_path / "corpus"
    assert main(["data", "speech", str(out), "--hours", "0.002", "--kind", "sentences"]) == 0
    assert capsys.readouterr().out.split("\n")[0] == f"speech train: {out / 'train.csv'}"
    manifest = speech.read_manifest(out / "train.csv")
    assert all(set(text.split()) <= SENTENCE_WORDS for _, text in manifest)
    assert json.loads((out / "corpus.json").read_text())["plan"]["kind"] == "sentences"


@needs_espeak
def test_every_accent_and_variant_is_heard_and_unknown_voices_are_refused():
    # espeak-ng falls back quietly: "en-gb+f1" sounds as "en-gb+m1", and so would an accent
    # it took for another; every accent with a male and a female variant tells them apart.
    plan, program = speech.Plan(), speech.espeak()
    u = dataclasses.replace(plan.utterance("train", 0), text="one two", speed=170, pitch=50)
    speakers = [(a, v) for a in speech.ACCENTS for v in ("m1", "f1")]
    speakers += [("en-us", v) for v in speech.VARIANTS]
    sounds = set()
    for accent, variant in speakers:
        samples, rate = speech.synthesise(
            program, dataclasses.replace(u, accent=accent, variant=variant)
        )
        assert rate > 8000 and samples.size > rate / 4
        sounds.add(samples.tobytes())
    assert len(sounds) == len(set(speakers))  # no accent or variant ignored
    with pytest.raises(CorpusError, match=r"failed on train-000000 \(.*xx-nowhere.*does not exist"):
        speech.synthesise(program, dataclasses.replace(u, accent="xx-nowhere"))


@settings(max_examples=60)  # conftest.py's profile, with more examples
@given(
    text=st.lists(
        st.sampled_from(["path", "transcript", "a.wav", "b.wav", ",", '"', "\n", "\r\n", " ",
                         "x", "\0", "é", "\udcff"]),
        max_size=25,
    ).map("".join)
)  # fmt: skip
def test_hostile_manifests_are_read_or_refused_by_name(tmp_path, text):
    write_wav(tmp_path / "a.wav", tone(0.1))
    (tmp_path / "m.csv").write_bytes(text.encode("utf-8", errors="surrogateescape"))
    try:
        manifest = speech.read_manifest(tmp_path / "m.csv")
    except CorpusError as err:
        assert str(err).startswith(f"{tmp_path / 'm.csv'}: "), str(err)
        return
    assert len(manifest) > 0
    assert all(path == tmp_path / "a.wav" and text.strip() for path, text in manifest)


@needs_espeak
def test_a_corpus_made_again_replaces_its_own_files_only(tmp_path):
    speech.generate(tmp_path, hours=0.002, seed=1)
    (tmp_path / "wav" / "train-999999.wav").write_bytes(b"left by an interrupted run")
    (tmp_path / "wav" / "notes.txt").write_text("mine")
    manifests = speech.generate(tmp_path, hours=0.002, seed=2)
    assert not (tmp_path / "wav" / "train-999999.wav").exists()
    assert (tmp_path / "wav" / "notes.txt").read_text() == "mine"
    listed = {path.name for m in manifests.values() for path, _ in speech.read_manifest(m)}
    assert listed == {p.name for p in (tmp_path / "wav").glob("*.wav")}
    assert json.loads((tmp_path / "corpus.json").read_text())["plan"]["seed"] == 2


def test_a_plan_is_checked_and_may_hold_nothing_out():
    everyone = speech.Plan(test_variants=())
    assert everyone.speakers("test") == everyone.speakers("train")
    assert len(everyone.speakers("val")) == len(speech.ACCENTS) * len(speech.VARIANTS)
    with pytest.raises(ValueError, match="no train speakers left"):
        speech.Plan(test_variants=speech.VARIANTS)
    with pytest.raises(ValueError, match="speeds is a \\(low, high\\) range"):
        speech.Plan(speeds=(200, 100))
    with pytest.raises(ValueError, match="noises white or pink"):
        speech.Plan(noises=("brown",))
    assert speech.held_out_variants(1, ("m1", "m2")) in {("m1",), ("m2",)}


def test_one_manifest_naming_speakers_validates_on_speakers_training_never_hears():
    config = SpeechConfig(val_fraction=0.3, seed=4)
    speakers = ["ann", "bob", "cy", "dee"] * 3
    rows = speech_features.held_out(Path("all.csv"), speakers, config)
    heard = {speakers[i] for i in rows["train"]}
    unheard = {speakers[i] for i in rows["val"]}
    assert len(unheard) == 1 and not heard & unheard  # round(0.3 x 4) = 1 speaker
    assert sorted(rows["train"] + rows["val"]) == list(range(12))
    by_utterance = speech_features.held_out(Path("all.csv"), [""] * 12, config)
    assert len(by_utterance["val"]) == 4  # no speakers: 30% of the utterances


def test_spec_augment_masks_whole_bands_and_short_spans_the_same_way_for_a_seed():
    import torch

    series = [torch.ones(50, 10), torch.ones(30, 10)]
    off = SpeechConfig()
    assert speech_features.spec_augment(series, off, [1, 2]) is series  # off by default
    bands = SpeechConfig(freq_masks=2, freq_mask=3)
    masked = speech_features.spec_augment(series, bands, [1, 2])
    for x in masked:
        zero_bands = (x == 0).all(dim=0)  # (F,) a band masked is masked at every frame
        assert ((x == 0).any(dim=0) == zero_bands).all() and zero_bands.sum() <= 6
    assert any((x == 0).all(dim=0).any() for x in masked)  # some band was masked
    assert (series[0] == 1).all()  # the training data itself is untouched
    again = speech_features.spec_augment(series, bands, [1, 2])
    assert all(torch.equal(a, b) for a, b in zip(masked, again, strict=True))
    spans = SpeechConfig(time_masks=1, time_mask=100)
    for x in speech_features.spec_augment(series, spans, [3, 4]):
        zero_frames = (x == 0).all(dim=1)
        assert ((x == 0).any(dim=1) == zero_frames).all()
        assert zero_frames.sum() <= len(x) // 5  # at most a fifth of the utterance
