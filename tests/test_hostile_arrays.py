"""Hostile arrays and images: .npz sequences (seqclass, tag), UCR/UEA text files, .npy
features and images for captioning.

A loader either returns usable data (finite float32 steps, one label per case, pixels of
the asked size) or raises a :class:`DataError` naming the file; an image that cannot be
read is skipped with the reason. Nothing is ever unpickled.
"""

import io
import struct
import zlib

import numpy as np
import pytest
from hostile import outcome  # tests/hostile.py
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from rnnkit.data import DataError, regimes, ucr
from rnnkit.data import images as folders

# --- .npz: arbitrary arrays under the names the readers look for ---

DTYPES = ["float32", "float64", "float16", "int64", "uint8", "bool", "complex64", "U2", "S2"]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
ANY_ARRAY = st.sampled_from(DTYPES + ["datetime64[D]"]).flatmap(
    lambda dtype: hnp.arrays(dtype, SHAPES)
)
NUMBERS = hnp.arrays(st.sampled_from(["float32", "float64"]), SHAPES)
COUNTS = hnp.arrays("int64", hnp.array_shapes(max_dims=1, max_side=4), elements=st.integers(-1, 5))


def npz_of(names):
    """A dict of arrays: each name present or not, numbers more often than not."""
    value = st.one_of(NUMBERS, COUNTS, ANY_ARRAY)
    return st.fixed_dictionaries({}, optional={name: value for name in names})


def rarely(usual, hostile):
    """``usual`` nine times in ten, else ``hostile``."""
    return st.integers(0, 9).flatmap(lambda k: hostile if k == 0 else usual)


def floats(shape):
    """Float arrays of ``shape``, now and then holding NaN or infinity."""
    finite = st.floats(-10, 10, width=32)
    return hnp.arrays("float32", shape, elements=rarely(finite, st.sampled_from([np.nan, np.inf])))


def step_counts(n: int, t: int):
    """(n,) lengths, now and then 0 or longer than ``t``."""
    return hnp.arrays("int64", n, elements=rarely(st.integers(1, t), st.sampled_from([0, t + 1])))


def cut_into(total: int):
    """Lengths summing to ``total``, or now and then not."""
    parts = st.lists(st.integers(1, 3), min_size=1, max_size=4)
    fitted = parts.map(lambda p: np.array(p[:-1] + [total - sum(p[:-1])]))
    return rarely(fitted.filter(lambda p: (p > 0).all()), parts.map(np.array))


@st.composite
def near_valid_cases(draw):
    """x padded (N, T, F) or flat (S, F) with lengths, y of N labels: off by one at times."""
    n, t, f = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 2))
    if draw(st.booleans()):
        arrays = {"x": draw(floats((n, t, f)))}
        if draw(st.booleans()):
            arrays["lengths"] = draw(step_counts(n, t))
    else:
        lengths = draw(cut_into(n * t))
        arrays = {"x": draw(floats((n * t, f))), "lengths": lengths}
        n = len(lengths)
    size = draw(rarely(st.just(n), st.sampled_from([n - 1, n + 1])))
    arrays["y"] = np.array(draw(st.lists(st.sampled_from("ab"), min_size=size, max_size=size)))
    return arrays


@st.composite
def near_valid_tags(draw):
    """inputs/labels flat (S,) or padded (N, T) with lengths: off by one at times."""
    n, t = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    values = st.lists(rarely(st.sampled_from([0.0, 1.0]), st.just(2.5)), min_size=n * t)
    labels = np.array(draw(values)[: n * t]).reshape(n, t)
    labels = labels.astype(draw(st.sampled_from([np.int64, np.float64, np.str_])))
    arrays = {"inputs": draw(floats((n, t, draw(st.integers(1, 2))))), "labels": labels}
    if draw(st.booleans()):
        arrays["lengths"] = draw(step_counts(n, t))
    else:
        arrays["inputs"], arrays["labels"] = arrays["inputs"][0], arrays["labels"][0]
        arrays["lengths"] = draw(cut_into(t))
    return arrays


@given(arrays=npz_of(["x", "y", "lengths"]) | near_valid_cases())
def test_seqclass_npz_of_any_arrays_loads_clean_cases_or_names_the_file(tmp_path, arrays):
    path = tmp_path / "cases.npz"
    np.savez(path, **arrays)
    data, message = outcome(ucr.read_file, path)
    if data is None:
        assert str(path) in message
        return
    assert len(data.series) == len(data.labels) == len(data.places) > 0
    assert len({s.shape[1] for s in data.series}) == 1
    for case in data.series:
        assert case.dtype == np.float32 and case.ndim == 2 and len(case) > 0
        assert np.isfinite(case).all()


@given(arrays=npz_of(["inputs", "labels", "lengths"]) | near_valid_tags())
def test_tag_npz_of_any_arrays_loads_clean_sequences_or_names_the_file(tmp_path, arrays):
    path = tmp_path / "tags.npz"
    np.savez(path, **arrays)
    data, message = outcome(regimes.load_npz, str(path))
    if data is None:
        assert str(path) in message
        return
    assert len(data.inputs) == len(data.labels) > 0
    for x, y in zip(data.inputs, data.labels, strict=True):
        assert x.dtype == np.float32 and x.ndim == 2 and len(x) == len(y) > 0
        assert np.isfinite(x).all() and y.ndim == 1 and y.dtype.kind in "iuUS"


def good_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((3, 4, 2)), y=np.arange(3), lengths=np.array([4, 2, 1]))
    return buffer.getvalue()


@given(
    raw=st.one_of(
        st.binary(max_size=300),
        st.integers(0, len(good_npz())).map(lambda n: good_npz()[:n]),  # truncated
        st.integers(0, len(good_npz()) - 1).map(  # one byte flipped
            lambda n: good_npz()[:n] + bytes([good_npz()[n] ^ 0xFF]) + good_npz()[n + 1 :]
        ),
    )
)
def test_a_damaged_npz_is_a_data_error_naming_it(tmp_path, raw):
    path = tmp_path / "bad.npz"
    path.write_bytes(raw)
    for load in (ucr.read_file, lambda p: regimes.load_npz(str(p)), folders.load_features):
        data, message = outcome(load, path)
        assert data is not None or str(path) in message


UNPICKLED = []


class Trap:
    """Unpickling this records it: a reader that unpickles fails the test below."""

    def __reduce__(self):
        return (UNPICKLED.append, ("unpickled",))


def test_object_arrays_are_refused_and_never_unpickled(tmp_path):
    objects = np.empty(2, dtype=object)
    objects[:] = [Trap(), np.zeros((3, 1))]
    np.savez(tmp_path / "o.npz", x=objects, y=np.array(["a", "b"]), inputs=objects, labels=objects)
    np.save(tmp_path / "o.npy", objects)
    with pytest.raises(DataError, match=r"o\.npz: holds an object array .* could run code"):
        ucr.read_file(tmp_path / "o.npz")
    with pytest.raises(DataError, match=r"o\.npz: not a readable \.npz without pickled objects"):
        regimes.load_npz(str(tmp_path / "o.npz"))
    with pytest.raises(DataError, match=r"o\.npy: not a \.npy array of numbers"):
        folders.load_features(tmp_path / "o.npy")
    assert UNPICKLED == []


def test_an_npy_named_npz_and_an_npz_named_npy_are_named(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 3)))
    (tmp_path / "a.npy").rename(tmp_path / "a.npz")
    for load in (ucr.read_file, lambda p: regimes.load_npz(str(p))):
        with pytest.raises(DataError, match=r"^\S*a\.npz: not an \.npz archive \(a single .npy"):
            load(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=np.zeros((2, 3)))
    (tmp_path / "b.npz").rename(tmp_path / "b.npy")
    with pytest.raises(DataError, match=r"b\.npy: an \.npz archive, not one \.npy array"):
        folders.load_features(tmp_path / "b.npy")


def test_ragged_cases_load_through_the_flat_layout_and_bad_lengths_are_named(tmp_path):
    x, y = np.arange(10.0).reshape(5, 2), np.array(["a", "b"])
    np.savez(tmp_path / "f.npz", x=x, y=y, lengths=np.array([3, 2]))
    data = ucr.read_file(tmp_path / "f.npz")
    assert [s.tolist() for s in data.series] == [x[:3].tolist(), x[3:].tolist()]
    np.savez(tmp_path / "f.npz", x=x, y=y, lengths=np.array([3, 3]))
    with pytest.raises(DataError, match=r"f\.npz: flat x has 5 steps but 'lengths' sums to 6"):
        ucr.read_file(tmp_path / "f.npz")
    np.savez(tmp_path / "f.npz", x=x[None], y=y[:1], lengths=np.array([9]))
    with pytest.raises(DataError, match=r"f\.npz: padded x has 1 cases of 5 steps"):
        ucr.read_file(tmp_path / "f.npz")
    np.savez(tmp_path / "f.npz", x=x[None], y=y[:1], lengths=np.array([np.nan]))
    with pytest.raises(DataError, match=r"f\.npz: 'lengths' must be 1-D positive integers"):
        ucr.read_file(tmp_path / "f.npz")


def test_tag_labels_must_be_whole_numbers_or_strings(tmp_path):
    inputs, lengths = np.zeros(4), np.array([2, 2])
    np.savez(
        tmp_path / "t.npz", inputs=inputs, labels=np.array([0.0, 1.0, 1.0, 0.0]), lengths=lengths
    )
    assert [y.tolist() for y in regimes.load_npz(str(tmp_path / "t.npz")).labels] == [
        [0, 1],
        [1, 0],
    ]
    np.savez(
        tmp_path / "t.npz", inputs=inputs, labels=np.array([0.5, 1, np.nan, 0]), lengths=lengths
    )
    with pytest.raises(DataError, match=r"t\.npz: 'labels' must be integers or strings"):
        regimes.load_npz(str(tmp_path / "t.npz"))
    np.savez(tmp_path / "t.npz", inputs=np.float32(1), labels=np.int64(0), lengths=np.array([1]))
    with pytest.raises(DataError, match=r"t\.npz: inputs \(\) and labels \(\): expected flat"):
        regimes.load_npz(str(tmp_path / "t.npz"))


# --- UCR/UEA text files ---

TS_HEADER = "@problemName toy\n@classLabel true up down\n@data\n"
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=60)
VALUE = st.sampled_from(["1", "-2.5", "1e3", "nan", "?", "x", "", "inf", "1e999"])
DIMENSION = st.lists(VALUE, min_size=1, max_size=3).map(",".join)
TS_CASE = st.tuples(st.lists(DIMENSION, max_size=3), st.sampled_from(["up", "down", "left", ""]))


@given(
    kind=st.sampled_from([".ts", ".arff", ".txt"]),
    body=st.one_of(
        st.lists(TS_CASE, max_size=5).map(lambda cs: [":".join([*d, label]) for d, label in cs]),
        st.lists(TEXT, max_size=5),
    ),
    header=st.booleans(),
    hostile=st.sampled_from([b"", b"\0", b"\xff", b"\xe2\x82"]),
)
def test_ucr_text_files_load_clean_cases_or_name_file_and_line(
    tmp_path, kind, body, header, hostile
):
    path = tmp_path / f"cases{kind}"
    head = {".ts": TS_HEADER, ".arff": "@relation toy\n@data\n", ".txt": ""}[kind]
    lines = (head if header else "").encode() + "\n".join(body).encode()
    raw = lines + b"\n" + hostile + b"\n" if hostile else lines
    path.write_bytes(raw)
    data, message = outcome(ucr.read_file, path)
    if data is None:
        assert str(path) in message
        if hostile:
            assert f"line {len(raw.splitlines())}" in message
        return
    assert not hostile and len(data.series) == len(data.labels) > 0
    for case, place in zip(data.series, data.places, strict=True):
        assert case.dtype == np.float32 and case.ndim == 2 and np.isfinite(case).all()
        assert place.startswith("line ")


def test_ts_without_a_class_label_line_is_named_not_a_key_error(tmp_path):
    path = tmp_path / "nolabel.ts"
    path.write_text("@problemName toy\n@data\n1,2:up\n")
    assert ucr.read_file(path).labels == ["up"]


# --- images ---


def encoded(fmt: str, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    raw = encoded("PNG", 0)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


IMAGE_BYTES = st.one_of(
    st.binary(max_size=200),
    st.tuples(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]), st.integers(0, 3))
    .map(lambda a: encoded(*a))
    .flatmap(lambda raw: st.integers(0, len(raw)).map(lambda n: raw[:n])),  # truncated
    st.just(png_claiming(100_000, 100_000)),
)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow warns, then reads on
@given(raw=IMAGE_BYTES)
def test_an_image_of_any_bytes_is_read_whole_or_skipped_with_a_reason(tmp_path, raw):
    path = tmp_path / "image.png"
    path.write_bytes(raw)
    pixels, why = folders.load_image(path, 16)
    if pixels is None:
        assert why.startswith("not a readable image") or why == "missing"
    else:
        assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8 and why == ""


def test_a_folder_of_unreadable_images_names_the_folder_and_an_image(tmp_path):
    (tmp_path / "captions.csv").write_text("image,caption\nbomb.png,a bomb\ncut.jpg,half\n")
    (tmp_path / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    (tmp_path / "cut.jpg").write_bytes(encoded("JPEG", 1)[:50])
    with pytest.raises(DataError, match=r"none of the 2 images could be read \(bomb\.png: not a"):
        folders.load_folder(tmp_path, 16)
    (tmp_path / "fine.png").write_bytes(encoded("PNG", 2))
    with (tmp_path / "captions.csv").open("a") as f:
        f.write("fine.png,a good one\n")
    folder = folders.load_folder(tmp_path, 16)
    assert folder.names == ["fine.png"] and [b.split(":")[0] for b in folder.bad] == [
        "bomb.png",
        "cut.jpg",
    ]
