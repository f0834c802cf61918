"""The README's self-contained examples run as written."""

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_the_usage_and_keras_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    namespace = {}
    exec(blocks[0], namespace)  # noqa: S102 - the project's own documentation
    assert namespace["output"].shape == (4, 10, 32)
    assert namespace["back"].hidden_size == 32
    exec(blocks[1], namespace)  # noqa: S102
    assert namespace["y"].shape == (4, 10, 32) and namespace["c"].shape == (4, 32)
