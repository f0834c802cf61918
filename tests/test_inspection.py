"""The inspection page: traced activations equal the model's, the page is valid and offline."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from rnnkit.tasks import charlm
from rnnkit.tools import inspection

SOURCE = 'def f(x):\n    return "a (b)"  # done\n\nprint(f([1, 2]))\n'


def test_text_features_by_hand():
    f = inspection.text_features('a("x")#c\n  b')
    assert f["inside a quote"].tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert f["inside a comment"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert f["bracket depth"].tolist() == [0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert f["position in the line"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3]
    assert f["indentation depth"].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2]


def test_correlations_equal_numpy():
    rng = np.random.default_rng(0)
    a, f = rng.normal(size=(50, 4)), rng.normal(size=50)
    a[:, 3] = 0.0  # a flat unit correlates with nothing
    want = [np.corrcoef(a[:, k], f)[0, 1] for k in range(3)] + [0.0]
    np.testing.assert_allclose(inspection.correlations(a, f), want, atol=1e-12)


def test_trace_equals_the_models_own_forward(charlm_run):
    _, vocab, model = charlm.load_run(charlm_run, "cpu")
    text = "hello hello"
    trace = inspection.trace_model(model, vocab, text)
    seen = []  # the recurrent stack's (output, state) inside the model's own forward
    model.rnn.register_forward_hook(lambda module, args, result: seen.append(result))
    with torch.no_grad():
        model(vocab.encode(text).unsqueeze(1))
    output, (h, c) = seen[0]
    assert len(trace.signals) == 2
    np.testing.assert_allclose(trace.signals[1]["hidden state h"], output[:, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(
        trace.signals[1]["tanh(cell state c)"][-1], torch.tanh(c[1, 0]).numpy(), atol=1e-6
    )
    gates = trace.gates[0]
    assert set(gates) == {"input_gate", "forget_gate", "output_gate"}
    assert all(g.shape == (len(text), 8) and g.min() > 0 and g.max() < 1 for g in gates.values())


class Checker(HTMLParser):
    """Balanced tags, and every attribute that could load something points nowhere outside."""

    VOID = {
        "meta",
        "br",
        "input",
        "img",
        "link",
        "path",
        "use",
        "stop",
        "rect",
        "circle",
        "line",
        "polyline",
        "polygon",
        "ellipse",
        "image",
    }

    def __init__(self):
        super().__init__()
        self.stack, self.external = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)
        for name, value in attrs:
            if (
                name in ("src", "href", "xlink:href", "action")
                and value
                and not value.startswith("#")
            ):
                self.external.append((tag, name, value))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def write_page(charlm_run, tmp_path):
    text = tmp_path / "source.py"
    text.write_text(SOURCE)
    return inspection.report(charlm_run, text, tmp_path / "report.html")


def test_page_is_valid_and_self_contained(charlm_run, tmp_path):
    page = write_page(charlm_run, tmp_path).read_text()
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == [] and checker.external == []
    assert "default-src 'none'" in page
    assert not re.search(r"https?://(?!www\.w3\.org/)", page)  # SVG namespaces only
    data = json.loads(re.search(r'id="data" type="application/json">(.*?)</script>', page, re.S)[1])
    assert len(data["layers"]) == 2 and data["tracking"]
    assert page.count("<figure>") == 2  # one saturation figure per layer


@pytest.mark.parametrize("bad,message", [(b"", "empty"), (b"ok\xff", "not valid UTF-8")])
def test_bad_text_file(charlm_run, tmp_path, bad, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(bad)
    with pytest.raises(ValueError, match=f"bad.txt: {message}"):
        inspection.report(charlm_run, path, tmp_path / "r.html")


CHROMIUM = shutil.which("chromium")


def chromium(page, fragment, tmp_path, *flags):
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        *flags,
        f"file://{page}#{fragment}",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def page_requests(net_log) -> list[str]:
    """URLs the page asked for: network requests not started by the browser itself."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start
        and e.get("params", {}).get("initiator", "not an origin") != "not an origin"
    ]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_the_request_check_sees_a_page_that_loads_from_outside(tmp_path):
    page = tmp_path / "leaky.html"
    page.write_text('<html><body><img src="http://127.0.0.1:9/pixel.png"></body></html>')
    net_log = tmp_path / "net.json"
    chromium(page, "", tmp_path, "--dump-dom", f"--log-net-log={net_log}")
    assert page_requests(net_log) == ["http://127.0.0.1:9/pixel.png"]


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)"
)
def test_page_renders_in_chromium_and_the_selector_recolours(charlm_run, tmp_path):
    page = write_page(charlm_run, tmp_path)
    net_log = tmp_path / "net.json"
    doms = {
        unit: chromium(
            page, f"layer=1&unit={unit}", tmp_path, "--dump-dom", f"--log-net-log={net_log}"
        )
        for unit in (0, 5)
    }
    colours = {}
    for unit, dom in doms.items():
        assert f'data-shown="1/tanh(cell state c)/{unit}"' in dom
        colours[unit] = re.findall(r'<span[^>]*style="background: (rgb\([^)]*\))', dom)
        assert len(colours[unit]) == len(SOURCE)  # every character coloured
    assert colours[0] != colours[5]
    assert page_requests(net_log) == []
    shot = tmp_path / "page.png"
    chromium(page, "unit=1", tmp_path, f"--screenshot={shot}", "--window-size=1000,1400")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
