"""The veto: refuses a semantic hit when two prompts differ in a token that decides the answer.

Embeddings place "from Paris to Berlin" and "from Berlin to Paris", or "do" and "do not", within a
few hundredths of cosine of each other; a threshold cannot separate them, this can. Pure and
cheap (regular expressions, no model): it runs on the few candidates the index returns.

Checked, in order: numbers (with number words), negation, units and currencies, polar words
(largest/smallest, buy/sell, ...), named things (capitalised words, acronyms, quoted strings,
code-like tokens), and, when a direction word is present (from, to, into, than, vs, ...), the
order in which the named things and numbers appear.
"""

from __future__ import annotations

import re
from collections import Counter

_APOSTROPHE = "\u2019"  # a typographic apostrophe, as in "don\u2019t"
_WORD = re.compile(r"[A-Za-z][A-Za-z'\u2019\-]*|\d+(?:[.,]\d+)*|[$€£¥%°]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_QUOTED = re.compile(r"[\"“”'`]([^\"“”'`]{1,80})[\"“”'`]")
_CODE = re.compile(r"\b\w+(?:[._/]\w+)+\b|\b\w+\(\)")
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "  # noqa: SIM905
        "seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000", "million": "1e6", "billion": "1e9"}
_NEGATIONS = {"not", "no", "never", "none", "neither", "nor", "without", "cannot", "nobody", "nothing", "nowhere"}
_UNITS = {
    "km", "kilometers", "kilometres", "mile", "miles", "m", "meter", "meters", "metre", "metres", "cm", "mm", "inch", "inches",
    "ft", "feet", "foot", "yard", "yards", "kg", "kilograms", "g", "grams", "lb", "lbs", "pounds", "ounce", "ounces", "oz",
    "l", "liter", "liters", "litre", "litres", "ml", "gallon", "gallons", "celsius", "fahrenheit", "kelvin", "°",
    "usd", "eur", "gbp", "jpy", "dollars", "euros", "yen", "$", "€", "£", "¥", "%", "percent",
    "seconds", "second", "minutes", "minute", "hours", "hour", "days", "day", "weeks", "week", "months", "month",
    "years", "year", "mph", "kph", "gb", "mb", "kb", "tb", "bytes", "bits",
}  # fmt: skip
_POLAR = [
    {"largest", "biggest", "smallest", "tiniest"}, {"highest", "lowest"}, {"most", "least", "fewest"},
    {"maximum", "max", "minimum", "min"}, {"increase", "decrease", "raise", "lower"}, {"buy", "sell"},
    {"first", "last"}, {"oldest", "newest", "youngest", "latest", "earliest"}, {"before", "after"},
    {"above", "below"}, {"more", "less", "fewer"}, {"longest", "shortest"}, {"fastest", "slowest"},
    {"best", "worst"}, {"better", "worse"}, {"hot", "cold"}, {"true", "false"}, {"add", "remove", "delete"},
    {"encrypt", "decrypt"}, {"encode", "decode"}, {"import", "export"}, {"upload", "download"},
    {"ascending", "descending"}, {"north", "south", "east", "west"}, {"left", "right"}, {"up", "down"},
    {"open", "close"}, {"enable", "disable"}, {"start", "stop"}, {"win", "lose"}, {"pros", "cons"},
    {"advantages", "disadvantages"}, {"male", "female"}, {"positive", "negative"}, {"same", "different"},
]  # fmt: skip
_POLAR_SIDE = {w: (g, side) for g, group in enumerate(_POLAR) for side, w in enumerate(sorted(group))}
# Synonyms share a side: "delete" and "remove" say the same, "tiniest" and "smallest" too.
for _same in (("delete", "remove"), ("tiniest", "smallest"), ("biggest", "largest"), ("fewest", "least"),
              ("fewer", "less"), ("max", "maximum"), ("min", "minimum"), ("raise", "increase"), ("lower", "decrease"),
              ("newest", "latest"), ("youngest", "newest"), ("earliest", "oldest")):  # fmt: skip
    _POLAR_SIDE[_same[0]] = _POLAR_SIDE[_same[1]]
_STOP = {"the", "a", "an", "my", "your", "our", "their", "his", "her", "its", "this", "that", "some", "of", "is", "are", "be"}
_DIRECTION = {"from", "to", "into", "than", "vs", "versus", "over", "against", "toward", "towards", "between"}
_NOT_NAMES = {"i", "i'm", "i've", "i'd", "i'll", "ok", "okay", "please", "hi", "hello", "thanks"}


def veto(a: str, b: str) -> str | None:
    """Why `a` and `b` cannot share an answer, or None when nothing found says so."""
    fa, fb = _Features(a), _Features(b)
    if fa.numbers != fb.numbers:
        return "numbers"
    if fa.negated != fb.negated:
        return "negation"
    if fa.units != fb.units:
        return "units"
    if _opposed(fa.polar, fb.polar):
        return "polarity"
    if Counter(fa.names) != Counter(fb.names) or (fa.quoted and fb.quoted and fa.quoted != fb.quoted):
        return "entities"
    pivots_differ = bool(fa.pivots and fb.pivots and fa.pivots != fb.pivots)
    if (fa.directional or fb.directional) and (fa.sequence != fb.sequence or pivots_differ):
        return "direction"
    return None


def _opposed(a: dict[int, set[int]], b: dict[int, set[int]]) -> bool:
    """Both texts use a word of the same polar group, on different sides (largest / smallest).
    A group only one text uses says nothing: paraphrases drop such words ("best way to" / "how to")."""
    return any(a[g] != b[g] for g in a.keys() & b.keys())


class _Features:
    __slots__ = ("directional", "names", "negated", "numbers", "pivots", "polar", "quoted", "sequence", "units")

    def __init__(self, text: str) -> None:
        words = _WORD.findall(text)
        lowered = [_normal(w) for w in words]
        numbers = [_NUMBER_WORDS.get(w, w) for w in lowered if _NUMBER.fullmatch(w) or w in _NUMBER_WORDS]
        self.numbers = Counter(n.replace(",", "") for n in numbers)
        self.negated = sum(w in _NEGATIONS or w.endswith("n't") for w in lowered) % 2 == 1
        self.units = {w for w in lowered if w in _UNITS}
        self.polar: dict[int, set[int]] = {}
        for w in lowered:
            if w in _POLAR_SIDE:
                group, side = _POLAR_SIDE[w]
                self.polar.setdefault(group, set()).add(side)
        self.quoted = {q.strip().lower() for q in _QUOTED.findall(text)}
        self.names = _names(text)
        self.directional = any(w in _DIRECTION for w in lowered)
        named = set(self.names)
        self.sequence = [w for w in lowered if w in named or w in self.numbers or w in self.units]
        self.pivots = _pivots(lowered)


def _normal(word: str) -> str:
    w = word.lower().replace(_APOSTROPHE, "'")
    return w[:-2] if w.endswith("'s") else w


def _pivots(words: list[str]) -> list[tuple[str, str]]:
    """The content words on either side of each direction word: ("savings", "checking") in
    "from savings to checking", ("tea", "coffee") in "tea healthier than coffee"."""
    content = [(i, w) for i, w in enumerate(words) if w not in _STOP]
    pivots = []
    for i, w in enumerate(words):
        if w in _DIRECTION and (w != "to" or "from" in words):  # a bare "to" is mostly an infinitive
            before = [c for j, c in content if j < i and c not in _DIRECTION]
            after = [c for j, c in content if j > i and c not in _DIRECTION]
            pivots.append((before[-1] if before else "", after[0] if after else ""))
    return pivots


def _names(text: str) -> list[str]:
    """Capitalised words that do not open a sentence (a sentence's first word is capitalised
    anyway: "Write", "At", "Briefly"), acronyms, and code-like tokens, lower-cased."""
    names = [c.lower() for c in _CODE.findall(text)]
    for match in _WORD.finditer(text):
        word = match.group()
        if not word[0].isupper() or _normal(word) in _NOT_NAMES:
            continue
        opens_sentence = text[: match.start()].rstrip()[-1:] in ("", ".", "!", "?", ":", "\n")
        if not opens_sentence or (word.isupper() and len(word) > 1):
            names.append(_normal(word))
    return names
