"""Noise (distractor) sentences that BABILong-style samples hide the facts in.

Two sources share one interface, :class:`NoiseSource`:

* :class:`BookNoise` reads plain-text books (Project Gutenberg files as in PG19, which the BABILong
  paper uses) and yields contiguous sentences from a random place.
* :class:`FillerNoise`, the built-in default, generates grammatical nature-description sentences
  from a small grammar whose content words appear in no bAbI task, so the filler can never state or
  contradict a fact. It needs no files; docs/data.md says why it is the default.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rmt_scale.data.text import read_utf8
from rmt_scale.errors import DataError

logger = logging.getLogger(__name__)

_START_RE = re.compile(r"^\*\*\*\s*START OF (?:THE|THIS) PROJECT GUTENBERG EBOOK.*$",
                       re.IGNORECASE | re.MULTILINE)
_END_RE = re.compile(r"^\*\*\*\s*END OF (?:THE|THIS) PROJECT GUTENBERG EBOOK.*$",
                     re.IGNORECASE | re.MULTILINE)
_PRODUCED_BY_RE = re.compile(r"\A\s*Produced by .*?(?:\n\s*\n|\Z)", re.DOTALL)
_END_OF_BOOK_RE = re.compile(r"^\s*End of (?:the )?Project Gutenberg.*\s*\Z",
                             re.IGNORECASE | re.MULTILINE | re.DOTALL)
# A sentence ends at . ! or ? (maybe followed by closing quotes or brackets) before whitespace and
# what looks like the start of the next sentence. Abbreviations such as "Mr. Darcy" are split too;
# for noise text that does no harm.
_SENTENCE_END_RE = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"'\u201d\u2019)\]]))\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])"
)


class NoiseSource(Protocol):
    """Anything that yields an endless stream of noise sentences from a random place."""

    def sentences(self, rng: random.Random) -> Iterator[str]:
        """Yield sentences without end, starting at a place chosen with ``rng``."""
        ...


def normalize_text(text: str) -> str:
    """Drop a UTF-8 byte-order mark and turn CRLF (and lone CR) line endings into LF."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def strip_gutenberg(text: str) -> str:
    """Keep only the body of a Project Gutenberg text: between its START and END lines.

    Text without the markers is returned unchanged (after :func:`normalize_text`), so ordinary
    plain-text files work too.
    """
    text = normalize_text(text)
    start = _START_RE.search(text)
    if start is not None:
        text = text[start.end():]
        # Volunteer credits ("Produced by ...") often open the body; they are not the book.
        text = _PRODUCED_BY_RE.sub("", text, count=1)
    end = _END_RE.search(text)
    if end is not None:
        text = text[: end.start()]
        # Most books close their body with an "End of the Project Gutenberg EBook of ..." line.
        text = _END_OF_BOOK_RE.sub("", text)
    return text


def split_sentences(text: str) -> list[str]:
    """Split text into sentences; line wrapping inside a paragraph is undone.

    Paragraphs are separated by blank lines; a sentence never spans two paragraphs, so headings
    and chapter titles come out as short sentences of their own. Pieces without a letter
    (ornaments such as ``* * *``) are dropped.
    """
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = " ".join(paragraph.split())
        for sentence in _SENTENCE_END_RE.split(paragraph):
            if any(ch.isalpha() for ch in sentence):
                sentences.append(sentence)
    return sentences


def read_book(path: str | Path) -> list[str]:
    """Read a UTF-8 plain-text book and return its body's sentences.

    Raises:
        DataError: If the file is not UTF-8 or holds no sentences.
    """
    path = Path(path)
    text = read_utf8(path)
    sentences = split_sentences(strip_gutenberg(text))
    if not sentences:
        raise DataError(f"{path}:1: no sentences in this noise file")
    return sentences


@dataclass
class BookNoise:
    """Noise drawn from books: contiguous sentences from a random start, wrapping at the end.

    Contiguous text keeps the noise natural prose, as in BABILong (which samples PG19 books).

    Attributes:
        sentences_list: All sentences of all books, book after book.
    """

    sentences_list: Sequence[str]

    @classmethod
    def from_files(cls, paths: Sequence[str | Path]) -> BookNoise:
        """Load books in the given order (see :func:`read_book`)."""
        if not paths:
            raise DataError("BookNoise needs at least one file")
        sentences: list[str] = []
        for path in paths:
            sentences.extend(read_book(path))
        logger.info("noise: %d sentences from %d files", len(sentences), len(paths))
        return cls(sentences)

    def sentences(self, rng: random.Random) -> Iterator[str]:
        n = len(self.sentences_list)
        index = rng.randrange(n)
        while True:
            yield self.sentences_list[index]
            index = (index + 1) % n


# The filler grammar. No content word here occurs in any bAbI task file (tests/data checks this
# against the real files), so filler cannot mention a bAbI person, place, object or relation.
_SUBJECTS = ("The wind", "The fog", "The rain", "A cold breeze", "The mist", "The tide",
             "The dust", "A faint glow", "The smoke", "The snow")
_SUBJECT_VERBS = ("drifted", "rolled", "swept", "crept", "wandered", "lingered", "settled",
                  "spread", "whispered", "curled")
_CREATURES = ("A heron", "An otter", "A sparrow", "A badger", "A beetle", "An owl", "A hare",
              "A fox", "A raven", "A trout")
_CREATURE_VERBS = ("rested", "waited", "hunted", "slept", "paused", "hid", "called", "watched",
                   "lingered", "waded")
_ADVERBS = ("slowly", "quietly", "softly", "briefly", "calmly", "idly", "patiently", "silently")
_PREPOSITIONS = ("over", "across", "along", "beside", "beneath", "through", "near", "around")
_ADJECTIVES = ("quiet", "distant", "misty", "ancient", "empty", "narrow", "wide", "silent",
               "golden", "frozen", "rocky", "shallow")
_LANDSCAPES = ("meadow", "valley", "river", "hills", "forest", "shore", "marsh", "orchard",
               "cliffs", "harbour", "moor", "bridge", "village", "lake")
_TIMES = ("At dawn", "At dusk", "At noon", "At midnight", "During the storm", "Later",
          "Long ago", "Every spring", "Each winter", "Once")
_SKIES = ("sky", "moon", "sun", "horizon", "cloud", "air", "light")
_SKY_STATES = ("pale", "bright", "heavy", "clear", "dim", "silver", "calm", "strange", "soft")
_SOUNDS = ("Distant bells", "Soft voices", "Old songs", "Low thunder", "Church chimes",
           "Faint echoes", "Quiet footsteps", "Slow drums")
_SOUND_VERBS = ("drifted", "rang", "echoed", "carried", "sounded", "faded", "murmured")


@dataclass
class FillerNoise:
    """Built-in generated filler: simple sentences about weather, animals and landscape.

    Deterministic given the ``rng`` passed to :meth:`sentences`; about 10^5 distinct sentences.
    """

    def sentence(self, rng: random.Random) -> str:
        """One filler sentence."""
        choice = rng.randrange(4)
        if choice == 0:
            return (f"{rng.choice(_SUBJECTS)} {rng.choice(_SUBJECT_VERBS)} "
                    f"{rng.choice(_PREPOSITIONS)} the {rng.choice(_ADJECTIVES)} "
                    f"{rng.choice(_LANDSCAPES)}.")
        if choice == 1:
            return (f"{rng.choice(_CREATURES)} {rng.choice(_CREATURE_VERBS)} "
                    f"{rng.choice(_ADVERBS)} {rng.choice(_PREPOSITIONS)} the "
                    f"{rng.choice(_LANDSCAPES)}.")
        if choice == 2:
            return (f"{rng.choice(_TIMES)} the {rng.choice(_SKIES)} was "
                    f"{rng.choice(_SKY_STATES)} {rng.choice(_PREPOSITIONS)} the "
                    f"{rng.choice(_ADJECTIVES)} {rng.choice(_LANDSCAPES)}.")
        return (f"{rng.choice(_SOUNDS)} {rng.choice(_SOUND_VERBS)} {rng.choice(_PREPOSITIONS)} "
                f"the {rng.choice(_LANDSCAPES)}.")

    def sentences(self, rng: random.Random) -> Iterator[str]:
        while True:
            yield self.sentence(rng)


def load_noise(noise_files: Sequence[str | Path] | None = None) -> NoiseSource:
    """:class:`BookNoise` over ``noise_files``, or :class:`FillerNoise` when none are given."""
    if noise_files:
        return BookNoise.from_files(noise_files)
    return FillerNoise()
