"""Captioning: the two encoder paths agree, decoding stops where it should, data in and out."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rnnkit import cli
from rnnkit.data import images as folders
from rnnkit.data import scenes
from rnnkit.data.pairs import EOS, PAD, SOS
from rnnkit.data.tables import TableError
from rnnkit.models.vision import VGGEncoder, to_tensor
from rnnkit.tasks import caption as cap
from rnnkit.tasks.translate import search_for

TINY = dict(image_size=32, blocks=2, width=4, convs=1, feature_size=12, embedding=8, hidden=16)
VOCAB = 9


def tiny_config(**options) -> cap.Config:
    return cap.Config(**{**TINY, "dropout": 0.0, **options})


def tiny_model(config: cap.Config) -> cap.Captioner:
    torch.manual_seed(0)
    return cap.build_model(config, VOCAB).eval()


def scene_pixels(count: int, side: int = 32) -> np.ndarray:
    return scenes.SceneSplit(4, "val", count, side).pixels(list(range(count)))


def all_searches():
    return {
        "greedy": search_for(),
        "beam": search_for(beam=3),
        "sample": search_for(temperature=1.0, seed=3),
    }


@pytest.mark.parametrize("feed_image", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_cnn_and_precomputed_rows_give_the_same_decoder_behaviour(tmp_path, feed_image, cell):
    config = tiny_config(feed_image=feed_image, cell=cell, attention="none")  # rows: no grid
    with_cnn = tiny_model(config)
    pixels = scene_pixels(5)
    rows = with_cnn.encoder(to_tensor(pixels)).detach().numpy()  # (5, F)
    np.save(tmp_path / "rows.npy", rows)
    with_rows = cap.build_model(tiny_config(feed_image=feed_image, cell=cell, features="x"), VOCAB)
    weights = {k: v for k, v in with_cnn.state_dict().items() if not k.startswith("encoder.")}
    with_rows.load_state_dict(weights)  # strict: the same decoder, nothing left out
    with_rows.eval()
    images = cap.Examples([["x"]] * 5, pixels=lambda i: pixels[i])
    features = cap.Examples([["x"]] * 5, features=folders.load_features(tmp_path / "rows.npy"))
    target_in = torch.tensor([[SOS, 4, 5, 6], [SOS, 7, PAD, PAD]] * 2 + [[SOS, 8, 8, 4]])
    torch.testing.assert_close(
        with_cnn(images.inputs(list(range(5))), target_in),
        with_rows(features.inputs(list(range(5))), target_in),
    )
    for name, search in all_searches().items():
        a = cap.caption_ids(with_cnn, images, range(5), search, max_output=7)
        search = all_searches()[name]  # a fresh generator for sampling
        assert a == cap.caption_ids(with_rows, features, range(5), search, max_output=7), name


@pytest.mark.parametrize("attention", ["none", "luong", "bahdanau"])
@pytest.mark.parametrize("feed_image", [False, True])
def test_teacher_forcing_equals_stepping_from_the_start_state(feed_image, attention):
    model = tiny_model(tiny_config(feed_image=feed_image, attention=attention))
    inputs = to_tensor(scene_pixels(3))
    target_in = torch.tensor([[SOS, 4, 5], [SOS, 6, 6], [SOS, 8, 7]])
    features, memory = model.encode(inputs)
    cells = 0 if attention == "none" else 64  # 32 px after two 2x2 pools: 8 x 8 cells
    assert features.shape == (3, 12) and memory.shape == (3, cells, 8 if cells else 0)
    state, by_hand = model.start(features, memory), []
    for t in range(3):
        logits, state = model.step(target_in[:, t], state)
        by_hand.append(logits)
    assert model(inputs, target_in).shape == (3, 3, VOCAB)
    torch.testing.assert_close(model(inputs, target_in), torch.stack(by_hand, dim=1))


@pytest.mark.parametrize("attention", ["none", "luong"])
@pytest.mark.parametrize("eos_bias", [-50.0, 0.0, 3.0, 50.0])
def test_captions_always_end_at_eos_or_the_length_limit(eos_bias, attention):
    model = tiny_model(tiny_config(attention=attention))
    with torch.no_grad():
        model.decoder.head.bias[EOS] += eos_bias  # never, sometimes, often, at once
    examples = cap.Examples([["x"]] * 6, pixels=lambda i: scene_pixels(6)[i])
    state = model.start(*model.encode(examples.inputs(list(range(6)))))
    limit = 5
    for name, search in all_searches().items():
        found = search(model.step, state, 6, SOS, EOS, limit)
        assert found.tokens.shape[1] <= limit, name
        rows = zip(found.tokens.tolist(), found.lengths.tolist(), found.finished, strict=True)
        for row, n, done in rows:
            if done:  # ends at its first eos, then only padding
                assert row[n - 1] == EOS and EOS not in row[: n - 1], (name, row)
                assert all(t == PAD for t in row[n:]), (name, row)
            else:  # ran to the limit without eos
                assert n == limit and EOS not in row, (name, row)
        if eos_bias >= 50:
            assert found.finished.all() and found.lengths.eq(1).all(), name
        if eos_bias <= -50:
            assert not found.finished.any(), name


def test_vgg_encoder_shapes_and_checks():
    encoder = VGGEncoder(32, blocks=2, width=4, convs=2, features=10)
    out = encoder(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 10) and (out >= 0).all()
    with pytest.raises(ValueError, match="divisible by 2\\*\\*blocks = 8"):
        VGGEncoder(36, blocks=3)
    with pytest.raises(ValueError, match="expected images \\(B, 3, 32, 32\\)"):
        encoder(torch.randn(3, 3, 48, 48))
    with pytest.raises(ValueError, match="uint8 pixels"):
        to_tensor(np.zeros((2, 32, 32, 3), np.float32))


def test_scores_take_the_closest_of_several_references():
    circle, cat = "a big red circle on the left".split(), "a cat on a mat".split()
    refs = [[circle, ["there", "is", *circle]], [cat]]  # two references, then one
    assert cap.match_scores([circle, cat], refs) == {"exact": 1.0, "bleu": pytest.approx(100.0)}
    assert cap.match_scores([["there", "is", *circle], cat], refs)["exact"] == 1.0
    wrong = cap.match_scores([["a", "blue", *circle[2:]], cat], refs)
    assert wrong["exact"] == 0.5 and 0 < wrong["bleu"] < 100


# --- data from a folder ---


def write_folder(root, good: int = 4, side: int = 40):
    """``good`` images of varied sizes, plus one missing and one broken file, with captions."""
    rows = ["image,caption"]
    for i in range(good):
        size = (side + 7 * i, side)
        Image.new("RGB", size, (40 * i, 200, 30)).save(root / f"im{i}.png")
        rows += [f"im{i}.png,a green picture number {i}", f'im{i}.png,"picture {i}, green"']
    (root / "broken.jpg").write_bytes(b"not an image at all")
    rows += ["missing.png,nothing here", "broken.jpg,a broken file"]
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root


def test_a_folder_is_resized_and_bad_images_are_listed_and_skipped(tmp_path):
    folder = folders.load_folder(write_folder(tmp_path), 32)
    assert folder.names == [f"im{i}.png" for i in range(4)] and len(folder) == 4
    assert folder.pixels.shape == (4, 32, 32, 3) and folder.pixels.dtype == np.uint8
    assert folder.references[1] == ["a green picture number 1", "picture 1, green"]
    assert [b.split(":")[0] for b in folder.bad] == ["missing.png", "broken.jpg"]
    assert "missing" in folder.bad[0] and "not a readable image" in folder.bad[1]
    assert folders.bad_images_summary(folder.bad).startswith("skipped 2 image(s)")


def test_bad_caption_files_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="no captions.csv"):
        folders.read_captions(tmp_path)
    (tmp_path / "captions.csv").write_text("file,text\na.png,a cat\n")
    with pytest.raises(TableError, match="no column 'image'"):
        folders.read_captions(tmp_path)
    (tmp_path / "captions.csv").write_text("image,caption\na.png,a cat\nb.png,\n")
    with pytest.raises(TableError, match="line 3, column 'caption'.*empty"):
        folders.read_captions(tmp_path)
    np.save(tmp_path / "f.npy", np.ones((3, 4)))
    with pytest.raises(ValueError, match="3 feature rows for 2 images"):
        folders.load_features(tmp_path / "f.npy", rows=2)
    np.save(tmp_path / "f.npy", np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        folders.load_features(tmp_path / "f.npy")


# --- the commands, end to end ---

FLAGS = "--image-size 32 --blocks 2 --width 4 --convs 1 --feature-size 12 --hidden 16 "
FLAGS += "--embedding 8 --steps 4 --eval-every 2 --threads 1 --device cpu --gallery 4"


def test_train_caption_scenes_then_caption_and_eval(tmp_path, capsys):
    run = tmp_path / "run"
    flags = f"--train-scenes 40 --val-scenes 8 --test-scenes 8 {FLAGS} --out {run}"
    assert cli.main(["train", "caption", *flags.split()]) == 0
    test = json.loads((run / "test.json").read_text())
    assert test["images"] == 8 and 0.0 <= test["exact"] <= 1.0
    assert (run / "gallery.png").stat().st_size > 0
    Image.fromarray(scene_pixels(1, 64)[0]).save(tmp_path / "big.png")  # resized on load
    capsys.readouterr()
    assert cli.main(["caption", str(run), str(tmp_path / "big.png"), "--beam", "2"]) == 0
    out = capsys.readouterr().out  # one line, the caption possibly empty for so small a run
    assert out.startswith(f"{tmp_path / 'big.png'}: ") and out.count("\n") == 1
    assert cli.main(["eval", str(run), "--data", "scenes"]) == 0
    assert "exact" in capsys.readouterr().out
    assert cli.main(["caption", str(run), str(tmp_path / "none.png")]) == 2


def test_train_caption_on_a_folder_with_precomputed_features(tmp_path, capsys):
    (tmp_path / "pics").mkdir()
    folder = write_folder(tmp_path / "pics", 10)
    np.save(tmp_path / "rows.npy", np.random.default_rng(0).normal(size=(12, 6)))  # 10 + 2 bad
    run = tmp_path / "run"
    flags = f"--data {folder} --features {tmp_path / 'rows.npy'} {FLAGS} --out {run}"
    assert cli.main(["train", "caption", *flags.split(), "--val-fraction", "0.2"]) == 0
    assert json.loads((run / "config.json").read_text())["feature_size"] == 6
    np.save(tmp_path / "one.npy", np.zeros(6))
    capsys.readouterr()
    assert cli.main(["caption", str(run), str(tmp_path / "one.npy")]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'one.npy'}: ")


def test_train_caption_on_a_folder_of_images_reports_the_skipped(tmp_path, capsys):
    folder = write_folder(tmp_path, 10)
    flags = f"--data {folder} {FLAGS} --out {tmp_path / 'run'} --val-fraction 0.2"
    assert cli.main(["train", "caption", *flags.split()]) == 0
    assert "skipped 2 image(s) that could not be read" in capsys.readouterr().err
