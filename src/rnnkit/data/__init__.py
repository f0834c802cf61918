"""Data for the tasks: corpora, vocabularies, and char-rnn style streams of windows."""

from rnnkit.data.corpus import BUILTIN, Corpus, CorpusError, load_corpus
from rnnkit.data.files import DataError
from rnnkit.data.streams import Streams, Window, eval_windows, split
from rnnkit.data.vocab import UNKNOWN, Vocab

__all__ = [
    "BUILTIN",
    "UNKNOWN",
    "Corpus",
    "CorpusError",
    "DataError",
    "Streams",
    "Vocab",
    "Window",
    "eval_windows",
    "load_corpus",
    "split",
]
