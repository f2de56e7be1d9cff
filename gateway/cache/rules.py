"""Checks that refuse a semantic hit by construction, before the verifier is asked.

Two prompts may share a cached answer only if they agree on what a model cannot paraphrase away:

- numbers: the same numbers, as written ("5 km" and "15 km" never share an answer; "5" and
  "five" are left to the verifier);
- quoted text: the same quoted spans, exactly ("reverse 'abc'" is not "reverse 'abd'");
- code: the same identifiers with dots, slashes, underscores or call parentheses
  (`os.path.join`, `user_id`, `len()`), and fenced or inline code, exactly;
- what the verifier cannot read: text its tokenizer maps to `[UNK]` (most Chinese characters,
  many Japanese kanji, emoji) must be the same on both sides and in the same order, since the
  model would see two different unknown words as one. In effect, prompts in a script the model
  was not trained on get exact hits only.

No word lists: each check is about the form of the text, in any language.
"""

from __future__ import annotations

import re
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
    if Counter(_QUOTED.findall(a)) != Counter(_QUOTED.findall(b)):
        return "quoted"
    if Counter(_code(a)) != Counter(_code(b)):
        return "code"
    if unseen is not None and list(unseen(a)) != list(unseen(b)):
        return "unreadable"
    return None


def _code(text: str) -> list[str]:
    return [m.group(0) for m in _CODE.finditer(text) if not m.group(0).replace(".", "").isdigit()]
