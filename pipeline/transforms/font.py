"""A 5x7 bitmap font (A-Z, 0-9, space and - . : / +) for burnt-in text tags.

scikit-image has no text renderer; this small font is enough for the markers hospitals burn into
images ("L", "R", "PORTABLE", "AP", "SUPINE").
"""

from __future__ import annotations

import numpy as np

GLYPH_HEIGHT, GLYPH_WIDTH = 7, 5

_GLYPHS = {
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "/": "00001 00001 00010 00100 01000 10000 10000",
    "+": "00000 00100 00100 11111 00100 00100 00000",
}

SUPPORTED_CHARACTERS = "".join(_GLYPHS)


def check_text(text: str) -> str:
    """Upper-cased `text` if every character has a glyph.

    Raises:
        ValueError: for an empty text, a non-string or characters without a glyph.
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"text must be a non-empty string, got {text!r}.")
    upper = text.upper()
    missing = sorted({c for c in upper if c not in _GLYPHS})
    if missing:
        raise ValueError(f"text={text!r} has characters without a glyph {missing}; allowed: {SUPPORTED_CHARACTERS!r}.")
    return upper


def text_bitmap(text: str) -> np.ndarray:
    """Boolean bitmap (7, 6 * len(text) - 1) of `text`, one blank column between characters.

    Raises:
        ValueError: see :func:`check_text`.
    """
    rows = []
    for char in check_text(text):
        glyph = np.array([[c == "1" for c in row] for row in _GLYPHS[char].split()], dtype=bool)
        rows.extend([glyph, np.zeros((GLYPH_HEIGHT, 1), dtype=bool)])
    return np.concatenate(rows[:-1], axis=1)
