"""Checks that refuse a semantic hit by construction, before the verifier is asked.

Two prompts may share a cached answer only if they agree on what a model cannot paraphrase away:

- numbers: the same numbers, as written ("5 km" and "15 km" never share an answer; "5" and
  "five" are left to the verifier);
- quoted text: each side's quoted spans written in the other, quoted or not, as whole words
  ("reverse 'abc'" is not "reverse 'abd'"; "what is a 'dry down'" is "what is a dry down");
- code: the same identifiers with dots, slashes, underscores or call parentheses
  (`os.path.join`, `user_id`, `len()`), and fenced or inline code, exactly;
- what the verifier cannot read: text its tokenizer maps to `[UNK]` (most Chinese characters,
  many Japanese kanji, emoji) must be the same on both sides and in the same order, since the
  model would see two different unknown words as one. In effect, prompts in a script the model
  was not trained on get exact hits only. Emoji and other symbols are held to that only when both
  sides have some: on one side only they are decoration ("thanks 🙂"), which the model reads as
  one unknown word and judges; "what does 🍆 mean" and "what does 🍑 mean" are still refused.

No word lists: each check is about the form of the text, in any language.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence

_NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*")
_QUOTES = "\"'\u201c\u201d\u2018\u2019\u00ab\u00bb\u201e\u300c\u300d\u300e\u300f"
"""Straight, typographic, guillemet and corner quotes."""
_QUOTED = re.compile(rf"(?<!\w)[{_QUOTES}]([^{_QUOTES}\n]{{1,200}})[{_QUOTES}](?!\w)")
_CODE = re.compile(r"```.*?```|`[^`\n]+`|\b\w+(?:[._/]\w+)+\b|\b\w+\(\)", re.DOTALL)
Unseen = Callable[[str], Sequence[str]]
"""The parts of a text the verifier's tokenizer cannot read, in order."""


def refuse(a: str, b: str, unseen: Unseen | None = None) -> str | None:
    """Why `a` and `b` may not share an answer whatever the verifier says, or None."""
    if Counter(_NUMBER.findall(a)) != Counter(_NUMBER.findall(b)):
        return "numbers"
    if not (_written_in(_QUOTED.findall(a), b) and _written_in(_QUOTED.findall(b), a)):
        return "quoted"
    if Counter(_code(a)) != Counter(_code(b)):
        return "code"
    if unseen is not None:
        (words_a, symbols_a), (words_b, symbols_b) = _parts(unseen(a)), _parts(unseen(b))
        if words_a != words_b or (symbols_a and symbols_b and symbols_a != symbols_b):
            return "unreadable"
    return None


def _written_in(spans: Sequence[str], text: str) -> bool:
    return all(re.search(rf"(?<!\w){re.escape(s.strip())}(?!\w)", text, flags=re.IGNORECASE) for s in spans)


def _parts(unseen: Sequence[str]) -> tuple[list[str], list[str]]:
    """The unreadable parts that hold a letter or digit, and those that are only symbols (emoji)."""
    words: list[str] = []
    symbols: list[str] = []
    for part in unseen:
        (symbols if all(unicodedata.category(c)[0] in "SCMZ" for c in part) else words).append(part)
    return words, symbols


def _code(text: str) -> list[str]:
    return [m.group(0) for m in _CODE.finditer(text) if not m.group(0).replace(".", "").isdigit()]
