"""Deterministic made-up names and codes: unique, never real words, so each occurs only where placed."""

from __future__ import annotations

import random

_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t",
           "tr", "v", "w", "z", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "io", "ou"]
_CODAS = ["", "n", "r", "l", "s", "th", "rn", "x", "m", "nd"]


class Names:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.used: set[str] = set()

    def word(self, syllables: int = 3) -> str:
        while True:
            word = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
                           for _ in range(syllables))
            if word not in self.used and len(word) > 5:
                self.used.add(word)
                return word.capitalize()

    def person(self) -> str:
        return f"{self.word(2)} {self.word(3)}"
