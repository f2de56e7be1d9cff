"""`gateway cache-data`: the generated pairs the cache verifier learns from, rebuilt from seeds.

The seeds (`evals/cache-seeds/*.yaml`, one file per language) are families of base questions: ways
to ask one question (`forms`) with slots, and ways to ask something else that looks alike
(`other`, `negation`, `scope`, `constraint`, `opposite`, `time`). Code makes the variation:

- duplicates: two forms with the same slot values (paraphrase), a form with typos (keyboard
  neighbours, dropped, doubled and swapped letters, missing apostrophes, case and punctuation),
  a form in a wordier wrapper or a terser one, with a context sentence, with that sentence moved
  (reordered);
- hard negatives: one slot value changed (entity, number, unit, time), the two ends of a direction
  swapped, a form that asks something else, a negated, narrowed, constrained or opposite form, an
  output format or an audience on one side (or a different one on each), a question negated by
  one of the language's rewrites (`negate`, on questions that ask "which" or "what": "welche
  Pflanzen darf man ... nicht setzen", "what should i not ...", 哪些药不可以 ...).

Both kinds get the same noise (typos, case, wrappers), so neither can be told by its surface.
Everything is drawn from one seeded generator: the same seeds make the same pairs. Each family
belongs to `train` or `calibration` by a hash of its first form, so no question is in both.

The seeds are few questions asked many ways; the hand-written pairs (evals/cache-pairs.jsonl) are
many questions on many topics, asked once. `augment` carries the variation over to them: each
hand-written pair again with other surface noise, wrappers or a shared context sentence (its label
kept), and from each of its two questions a typo, a wordier or contextual restatement (duplicates)
or the same question with an output format, an audience, an opposite word or a negation (hard negatives).
Augmented pairs keep the source and split of the pair they come from.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import yaml

from gateway.offline.cache_eval import Pair

SEEDS = Path(__file__).resolve().parents[2] / "evals" / "cache-seeds"
CALIBRATION_SHARE = 0.2
"""Families (by hash) whose pairs go to the calibration split, where thresholds are fitted."""
_NEGATIVE_FORMS = {
    "other": "topic",
    "negation": "negation",
    "scope": "scope",
    "constraint": "constraint",
    "opposite": "direction",
    "time": "time",
}
_KEYBOARD = dict(
    zip(
        "qwertyuiopasdfghjklzxcvbnm",
        [
            "wa",
            "qes",
            "wrd",
            "etf",
            "ryg",
            "tuh",
            "yij",
            "uok",
            "ipl",
            "ol",
            "qsz",
            "awdx",
            "sefc",
            "drgv",
            "fthb",
            "gyjn",
            "hukm",
            "jil",
            "kop",
            "xas",
            "zcsd",
            "xvdf",
            "cbfg",
            "vngh",
            "bmhj",
            "njk",
        ],
        strict=True,
    )
)


@dataclass
class Family:
    lang: str
    forms: list[str]
    slots: dict[str, list[str]]
    negatives: dict[str, list[str]] = field(default_factory=dict)
    direction: tuple[str, str] | None = None
    zipped: bool = False
    audience: bool = False

    @property
    def name(self) -> str:
        return f"{self.lang}:{self.forms[0]}"

    def split(self) -> str:
        digest = int(hashlib.sha256(self.name.encode()).hexdigest()[:8], 16)
        return "calibration" if digest / 0xFFFFFFFF < CALIBRATION_SHARE else "train"


@dataclass
class Language:
    lang: str
    families: list[Family]
    wrappers: list[str]
    context: list[str]
    format: list[str]
    audience: list[str]
    qualifiers: list[str] = field(default_factory=list)
    """Narrow a question ("on a budget", "for beginners"): one side only is a hard negative (scope),
    both sides the same is still a duplicate."""
    antonyms: list[list[str]] = field(default_factory=list)
    """Word pairs whose swap asks the opposite (kind direction)."""
    negate: list[list[str]] = field(default_factory=list)
    """Rewrites that negate a question ([regular expression, replacement], case ignored): one that
    matches, drawn at random, is applied once (kind negation)."""
    negated: str = ""
    """What marks a question as negated already (a regular expression): `negate` leaves it alone."""


def load(seeds: Path = SEEDS) -> list[Language]:
    languages = []
    for path in sorted(seeds.glob("*.yaml")):
        raw: dict[str, Any] = yaml.safe_load(path.read_text())
        lang = raw["lang"]
        families = []
        for f in raw["families"]:
            negatives = {kind: f[key] for key, kind in _NEGATIVE_FORMS.items() if f.get(key)}
            direction = tuple(f["direction"]) if f.get("direction") else None
            slots = {k: [str(v) for v in vs] for k, vs in (f.get("slots") or {}).items()}
            families.append(Family(lang, f["forms"], slots, negatives, direction, bool(f.get("zip")), bool(f.get("audience"))))
        languages.append(
            Language(
                lang,
                families,
                raw["wrappers"],
                raw["context"],
                raw["format"],
                raw["audience"],
                raw.get("qualifiers", []),
                raw.get("antonyms", []),
                raw.get("negate", []),
                raw.get("negated", ""),
            )
        )
    return languages


def slot_kind(name: str) -> str:
    if name == "n" or name.startswith("n_") or name in {"m"}:
        return "number"
    if name.startswith("unit"):
        return "unit"
    if name.startswith("time") or name in {"year", "month"}:
        return "time"
    return "entity"


class _Maker:
    def __init__(self, language: Language, rng: random.Random) -> None:
        self.language = language
        self.rng = rng
        self.cjk = language.lang in {"zh", "ja"}

    def fill(self, family: Family) -> dict[str, str]:
        rng = self.rng
        if family.zipped:
            i = rng.randrange(len(next(iter(family.slots.values()))))
            return {k: v[i] for k, v in family.slots.items()}
        values = {k: rng.choice(v) for k, v in family.slots.items()}
        if family.direction is not None:
            a, b = family.direction
            values[a], values[b] = rng.sample(family.slots[a], 2)
        return values

    def changed(self, family: Family, values: dict[str, str]) -> tuple[dict[str, str], str] | None:
        """The values with one slot changed, and the kind of change."""
        names = [k for k, v in family.slots.items() if len(v) > 1 and (family.direction is None or k not in family.direction)]
        if family.zipped:
            other = self.fill(family)
            return (other, "entity") if other != values else None
        if not names:
            return None
        name = self.rng.choice(names)
        choices = [v for v in family.slots[name] if v != values[name]]
        return {**values, name: self.rng.choice(choices)}, slot_kind(name)

    def say(self, form: str, values: dict[str, str]) -> str:
        return form.format(**values)

    def noise(self, text: str, typo_p: float = 0.15) -> str:
        """Chat-style surface: lower case sometimes, the question mark dropped sometimes, a typo sometimes."""
        rng = self.rng
        if not self.cjk and rng.random() < 0.35:
            text = text.lower()
        if not self.cjk and rng.random() < 0.1:  # typed on a phone: "cant", "whats"
            text = text.replace("'", "").replace("\u2019", "")
        if rng.random() < 0.25:
            text = text.rstrip("?\uff1f!\u3002.")
        if rng.random() < typo_p:
            text = self.typo(text)
        return text

    def typo(self, text: str, edits: int = 0) -> str:
        rng = self.rng
        edits = edits or rng.choice((1, 1, 1, 2))
        for _ in range(edits):
            if self.cjk:
                spots = [i for i, c in enumerate(text) if c.isalpha() and not c.isascii()]
                if not spots:
                    break
                i = rng.choice(spots)
                text = rng.choice((text[:i] + text[i + 1 :], text[:i] + text[i] + text[i:]))
                continue
            words = [(m.start(), m.end()) for m in _words(text) if m.end() - m.start() >= 4]
            if not words:
                break
            start, end = rng.choice(words)
            word = text[start:end]
            text = text[:start] + self._misspell(word) + text[end:]
        return text

    def _misspell(self, word: str) -> str:
        rng = self.rng
        if "'" in word and rng.random() < 0.5:
            return word.replace("'", "", 1)
        i = rng.randrange(1, len(word) - 1)
        how = rng.choice(("neighbour", "drop", "double", "swap"))
        c = word[i]
        if how == "neighbour" and c.lower() in _KEYBOARD:
            return word[:i] + rng.choice(_KEYBOARD[c.lower()]) + word[i + 1 :]
        if how == "drop":
            return word[:i] + word[i + 1 :]
        if how == "double":
            return word[:i] + c + word[i:]
        return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]

    def wrap(self, text: str) -> str:
        wrapper = self.rng.choice(self.language.wrappers)
        if not self.cjk and not wrapper.startswith("{q}") and text[:1].isupper() and not text[:2].isupper():
            text = text[0].lower() + text[1:]
        return wrapper.format(q=text)

    def qualify(self, text: str, qualifier: str) -> str:
        """`text` narrowed by `qualifier`, put before its closing question mark."""
        space = "" if self.cjk else " "
        stripped = text.rstrip("?\uff1f")
        return f"{stripped}{space}{qualifier}{text[len(stripped) :]}"

    def opposite(self, text: str) -> str | None:
        """`text` with one word swapped for its opposite, if it has one of the language's pairs."""
        import re

        found = []
        for pair in self.language.antonyms:
            for i, word in enumerate(pair):
                pattern = re.escape(word) if self.cjk else rf"(?<!\w){re.escape(word)}(?!\w)"
                if re.search(pattern, text, flags=re.IGNORECASE):
                    found.append((pattern, pair[1 - i]))
        if not found:
            return None
        pattern, other = self.rng.choice(found)
        return re.sub(pattern, other, text, count=1, flags=re.IGNORECASE)

    def negated(self, text: str) -> str | None:
        """`text` negated by one of the language's rewrites, if one applies."""
        import re

        if self.language.negated and re.search(self.language.negated, text, flags=re.IGNORECASE):
            return None
        rules = [(p, r) for p, r in self.language.negate if re.search(p, text, flags=re.IGNORECASE)]
        if not rules:
            return None
        pattern, replacement = self.rng.choice(rules)
        out = re.sub(pattern, replacement, text, count=1, flags=re.IGNORECASE)
        return out if out != text else None

    def sentence(self, text: str, extra: str, before: bool) -> str:
        space = "" if self.cjk else " "
        return f"{extra}{space}{text}" if before else f"{text}{space}{extra}"

    def pairs(self, family: Family, count: int) -> Iterator[tuple[str, str, bool, str]]:
        rng = self.rng
        kinds = ["paraphrase", "typo", "typo", "wordier", "context", "reorder", "same"]
        negatives = [
            "slot",
            "slot",
            "format",
            "audience",
            "qualifier",
            "qualifier",
            "antonym",
            "antonym",
            *(["negate"] * 2 if self.language.negate else []),
            *(["direction"] * 3 if family.direction else []),
            *(k for k in family.negatives for _ in range(3)),
        ]
        for _ in range(count):
            values = self.fill(family)
            f1, f2 = rng.choice(family.forms), rng.choice(family.forms)
            if rng.random() < 0.5:
                kind = rng.choice(kinds)
                a, b = self.say(f1, values), self.say(f2, values)
                if self.language.qualifiers and rng.random() < 0.2:  # narrowed alike on both sides: still one question
                    qualifier = rng.choice(self.language.qualifiers)
                    a, b = self.qualify(a, qualifier), self.qualify(b, qualifier)
                if kind == "paraphrase":
                    if f1 == f2 and len(family.forms) > 1:
                        b = self.say(rng.choice([f for f in family.forms if f != f1]), values)
                    yield self.noise(a), self.noise(b), True, kind
                elif kind == "typo":  # mostly in the same words: a typo, nothing else
                    b = b if rng.random() < 0.4 else a
                    yield self.noise(a, 0), self.typo(self.noise(b, 0)), True, "typo"
                elif kind == "same":  # the same words, in case, spacing and punctuation only: one question
                    yield self.noise(a, 0), self.noise(a, 0), True, "typo"
                elif kind == "wordier":
                    wordy, plain = self.wrap(a), b
                    yield (
                        (self.noise(wordy), self.noise(plain), True, "wordier")
                        if rng.random() < 0.5
                        else (self.noise(plain), self.noise(wordy), True, "terse")
                    )
                elif kind == "context":
                    extra = rng.choice(self.language.context)
                    yield self.noise(self.sentence(a, extra, rng.random() < 0.6)), self.noise(b), True, "context"
                else:
                    extra = rng.choice(self.language.context)
                    yield (
                        self.noise(self.sentence(a, extra, True)),
                        self.noise(self.sentence(a if rng.random() < 0.5 else b, extra, False)),
                        True,
                        "reorder",
                    )
                continue
            kind = rng.choice(negatives)
            a = self.say(f1, values)
            if kind == "slot":
                change = self.changed(family, values)
                if change is None:
                    continue
                other, kind = change
                b = self.say(f2, other)
            elif kind == "direction" and family.direction is not None:
                x, y = family.direction
                b = self.say(f2, {**values, x: values[y], y: values[x]})
            elif kind == "qualifier":
                if not self.language.qualifiers:
                    continue
                first, second = rng.sample(self.language.qualifiers, 2)
                b = self.qualify(self.say(f2, values), first)
                if rng.random() < 0.3:
                    a = self.qualify(a, second)
                kind = "scope"
            elif kind in {"antonym", "negate"}:  # a form with an opposite word, or negated
                rewrite, kind = (self.opposite, "direction") if kind == "antonym" else (self.negated, "negation")
                flipped = next(
                    (o for f in rng.sample(family.forms, len(family.forms)) if (o := rewrite(self.say(f, values)))), None
                )
                if flipped is None:
                    continue
                b = flipped
            elif kind in {"format", "audience"}:
                sentences = self.language.format if kind == "format" else self.language.audience
                first, second = rng.sample(sentences, 2)
                with_it = self.sentence(self.say(f2, values), first, False)
                b = self.sentence(a, second, False) if rng.random() < 0.3 else a
                a = with_it
            else:
                b = self.say(rng.choice(family.negatives[kind]), values)
            if rng.random() < 0.25:
                a = self.wrap(a)
            if rng.random() < 0.5:
                a, b = b, a
            yield self.noise(a), self.noise(b), False, kind

    def variants(self, pair: Pair) -> Iterator[tuple[str, str, bool, str]]:
        """A hand-written pair with other noise (its label kept), then a pair made from each side."""
        rng = self.rng
        a, b = pair.a, pair.b
        if rng.random() < 0.3:
            a, b = (self.wrap(a), b) if rng.random() < 0.5 else (a, self.wrap(b))
        if self.language.context and rng.random() < 0.25:
            extra = rng.choice(self.language.context)
            a, b = self.sentence(a, extra, True), self.sentence(b, extra, rng.random() < 0.5)
        yield self.noise(a), self.noise(b), pair.same, pair.kind
        for question in (pair.a, pair.b):
            made = self.around(question)
            if made is not None:
                first, second, same, kind = made
                if rng.random() < 0.5:
                    first, second = second, first
                yield self.noise(first), self.noise(second), same, kind

    def around(self, question: str) -> tuple[str, str, bool, str] | None:
        """`question` beside a restatement of it, or beside a question that looks alike but asks more."""
        rng = self.rng
        how = rng.choice(("typo", "typo", "wordier", "context", "format", "audience", "antonym", "negate"))
        if how == "typo":
            return question, self.typo(question), True, "typo"
        if how == "wordier":
            return question, self.wrap(question), True, "wordier"
        if how == "context":
            return question, self.sentence(question, rng.choice(self.language.context), rng.random() < 0.6), True, "context"
        if how == "antonym":
            flipped = self.opposite(question)
            return None if flipped is None else (question, flipped, False, "direction")
        if how == "negate":
            negated = self.negated(question)
            return None if negated is None else (question, negated, False, "negation")
        sentences = self.language.format if how == "format" else self.language.audience
        return question, self.sentence(question, rng.choice(sentences), False), False, how


def augment(pairs: list[Pair], seed: int = 0, seeds: Path = SEEDS) -> list[Pair]:
    """`variants` of each pair in a language the seeds have (see the module's docstring)."""
    languages = {language.lang: language for language in load(seeds)}
    out: list[Pair] = []
    seen = {(p.a, p.b) for p in pairs}
    for pair in pairs:
        language = languages.get(pair.lang or "en")
        if language is None:
            continue
        maker = _Maker(language, random.Random(f"{seed}:{pair.source}:{pair.a}:{pair.b}"))
        for a, b, same, kind in maker.variants(pair):
            if a == b or (a, b) in seen or (b, a) in seen:
                continue
            seen.add((a, b))
            out.append(Pair(a, b, same, kind, pair.source, pair.split, pair.lang))
    return out


def _words(text: str) -> Iterator[Any]:
    import re

    return re.finditer(r"[^\W\d_]+(?:'[^\W\d_]+)?", text)


def generate(seeds: Path = SEEDS, per_family: int = 200, seed: int = 0) -> list[Pair]:
    """Pairs from every family, `per_family` drawn (duplicates dropped), in a fixed order."""
    pairs: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    for language in load(seeds):
        for family in language.families:
            rng = random.Random(f"{seed}:{family.name}")
            maker = _Maker(language, rng)
            for a, b, same, kind in itertools.islice(maker.pairs(family, per_family * 2), per_family):
                if a == b or (a, b) in seen or (b, a) in seen:
                    continue
                seen.add((a, b))
                pairs.append(Pair(a, b, same, kind, f"generated-{language.lang}", family.split(), language.lang))
    return pairs


def write(pairs: list[Pair], path: Path) -> None:
    with path.open("wb") as f:
        for p in pairs:
            f.write(msgspec.json.encode(p) + b"\n")
