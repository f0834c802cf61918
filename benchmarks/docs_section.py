"""Replace one benchmark's section of docs/benchmarks.md, keeping every other section.

A section is the text between its own start and end markers (HTML comments, invisible in
the rendered page); a file without the section gets it appended.
"""

import os


def write_section(path: str, text: str, start: str, end: str) -> None:
    old = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if start in old:  # replaced where it stands, so hand-written notes around it stay beside it
        head, rest = old.split(start, 1)
        new = head + text.strip("\n") + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    with open(path, "w") as f:
        f.write(new)
