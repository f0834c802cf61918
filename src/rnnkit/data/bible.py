"""bible-en-es: English-Spanish verse pairs from Debian's public-domain SWORD modules.

The World English Bible (Debian package ``sword-text-web``, module ``engWEB2015eb``) and
the Reina-Valera 1909 (``sword-text-sparv``, module ``spaRV1909eb``) are exported with
``mod2imp`` (package ``libsword-utils``) and aligned by book, chapter and verse, giving
about 31,000 pairs. Nothing is installed here: when a package is missing, the error names
the ``apt-get install`` line that brings it.

``mod2imp``'s format: a line ``$$$<key>`` (``$$$Genesis 1:1``) starts each entry, and the
lines up to the next ``$$$`` are its text in OSIS markup. Footnotes and section titles are
dropped with their content; every other tag is dropped and its text kept; keys that are not
verses (``[ Module Heading ]``, chapter introductions ``Genesis 1:0``) are skipped.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

from rnnkit.data.pairs import Pair, PairsError

NAME = "bible-en-es"
MODULES = {"engWEB2015eb": "sword-text-web", "spaRV1909eb": "sword-text-sparv"}
ENGLISH, SPANISH = "engWEB2015eb", "spaRV1909eb"
MODULE_DIRS = (Path("/usr/share/sword/mods.d"), Path.home() / ".sword/mods.d")
_VERSE_KEY = re.compile(r"^(.+) (\d+):(\d+)$")
_DROPPED = re.compile(r"<(note|title)\b[^>]*>.*?</\1>", re.DOTALL)  # with their content
_INLINE = re.compile(r"</?(w|transChange|name|seg|q|hi|catchWord|rdg|foreign|divineName)\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")
_SPACE_BEFORE = re.compile(r"\s+([,.;:!?])")


def read_imp(text: str) -> dict[str, str]:
    """Verse key ("Genesis 1:1") -> plain text, from ``mod2imp`` output."""
    verses, key, lines = {}, None, []
    for line in text.splitlines() + ["$$$"]:
        if not line.startswith("$$$"):
            lines.append(line)
            continue
        if key is not None and is_verse(key):
            plain = strip_markup("\n".join(lines))
            if plain:
                verses[key] = plain
        key, lines = line[3:].strip(), []
    return verses


def is_verse(key: str) -> bool:
    match = _VERSE_KEY.match(key)
    return bool(match) and int(match.group(2)) > 0 and int(match.group(3)) > 0


def strip_markup(osis: str) -> str:
    """Plain text of an OSIS fragment: notes and titles dropped, tags removed, spaces tidied."""
    text = _DROPPED.sub(" ", osis)
    text = _INLINE.sub("", text)  # word-level tags sit inside words' spacing: no space added
    text = _TAG.sub(" ", text)  # structural tags (lines, paragraphs) separate words
    text = " ".join(html.unescape(text).split())
    return _SPACE_BEFORE.sub(r"\1", text)


def align(english: dict[str, str], spanish: dict[str, str]) -> list[Pair]:
    """(English, Spanish) pairs of the verse keys both texts have, in the English order."""
    return [(text, spanish[key]) for key, text in english.items() if key in spanish]


def chapters(keys: list[str]) -> list[str] | None:
    """The chapter ("Genesis 1") of each verse key ("Genesis 1:3"), or None when a key is
    not a verse's (a TSV of other text, or one written before keys were)."""
    found = [_VERSE_KEY.match(key) for key in keys]
    if not keys or not all(found):
        return None
    return [f"{match.group(1)} {int(match.group(2))}" for match in found]


def installed(module: str) -> bool:
    """Whether a SWORD module's description is installed (Debian puts it in mods.d)."""
    return any(
        (d / f"{module}.conf").exists() or (d / f"{module.lower()}.conf").exists()
        for d in MODULE_DIRS
    )


def installed_modules() -> list[str]:
    """The names of the installed SWORD modules, as their ``.conf`` files give them."""
    names = {p.stem for d in MODULE_DIRS if d.is_dir() for p in d.glob("*.conf")}
    return sorted(names - {"globals"})


def missing_packages() -> list[str]:
    """The Debian packages this needs that are not installed (judged by what they provide)."""
    missing = [] if shutil.which("mod2imp") else ["libsword-utils"]
    return missing + [package for module, package in MODULES.items() if not installed(module)]


def running_text(module: str) -> str:
    """A SWORD module as one text to read: a line with the book and chapter at the start of
    each chapter ("Genesis 1"), then one verse per line; a blank line between chapters."""
    if not shutil.which("mod2imp"):
        raise PairsError("reading a SWORD module needs mod2imp: apt-get install libsword-utils")
    if not installed(module):
        have = ", ".join(installed_modules()) or "none"
        raise PairsError(
            f"no SWORD module {module!r} is installed (installed: {have}); Debian ships "
            "modules as packages sword-text-*, e.g. apt-get install sword-text-kjv"
        )
    lines, chapter = [], None
    for key, verse in read_imp(export(module)).items():
        book_and_chapter = key.rsplit(":", 1)[0]
        if book_and_chapter != chapter:
            lines += ["", book_and_chapter] if lines else [book_and_chapter]
            chapter = book_and_chapter
        lines.append(verse)
    return "\n".join(lines) + "\n"


def export(module: str) -> str:
    """The ``mod2imp`` export of a SWORD module, raw (with markup)."""
    done = subprocess.run(["mod2imp", module], capture_output=True, text=True, check=False)
    if done.returncode != 0 or "$$$" not in done.stdout:
        raise PairsError(f"mod2imp {module} failed: {(done.stdout + done.stderr).strip()[-300:]}")
    return done.stdout


def verses() -> tuple[dict[str, str], dict[str, str]]:
    """The English and Spanish verses by key, or an error naming the packages to install."""
    missing = missing_packages()
    if missing:
        raise PairsError(
            f"{NAME} needs the Debian package(s) {', '.join(missing)}: "
            f"apt-get install {' '.join(missing)}"
        )
    return read_imp(export(ENGLISH)), read_imp(export(SPANISH))


def tsv_lines(english: dict[str, str], spanish: dict[str, str]) -> list[str]:
    """``english<TAB>spanish<TAB>key`` lines of the verses both have (tabs inside a verse
    become spaces); the key lets a translate run split by chapter."""
    return [
        f"{text.replace(chr(9), ' ')}\t{spanish[key].replace(chr(9), ' ')}\t{key}\n"
        for key, text in english.items()
        if key in spanish
    ]


def write_tsv(path: str | Path) -> int:
    """Write the verse pairs with their keys (:func:`tsv_lines`); return how many."""
    lines = tsv_lines(*verses())
    Path(path).write_text("".join(lines), encoding="utf-8")
    return len(lines)
