"""The veto: refuses a semantic hit when two prompts differ in a token that decides the answer.

Embeddings place "from Paris to Berlin" and "from Berlin to Paris", or "do" and "do not", within a
few hundredths of cosine of each other; a threshold cannot separate them, this can. Pure and
cheap (regular expressions, no model): it runs on the few candidates the index returns.

Checked, in order: numbers (with number words), negation, units and currencies, polar words
(largest/smallest, buy/sell, ...), named things (capitalised words, acronyms, quoted strings,
code-like tokens), and, when a direction word is present (from, to, into, than, vs, ...), the
order in which the named things and numbers appear.

Then what the questions ask for: "What is stoicism?" and "Who founded stoicism?" share their
words, not their answer. Who, where and when (or "in what year") must open a question in both or
neither; a reason ("why", "what causes"), an amount ("how often") and a method ("how do I") must
not be asked one against another, nor a remedy ("what should I do if") against a yes-or-no. And
the shape asked for ("as a bulleted list", "in a table", "in one sentence") or the reader ("to a
network engineer", "like I'm five") on one side only.

Last, a rule that needs no word list to know the words: two prompts worded alike except for one
or two swapped content words ("legal" / "illegal", "formal" / "casual", "Rome conquer Carthage" /
"Carthage conquer Rome") are not paraphrases; the swap is what is being asked. Paraphrases reword
the frame ("How do I" / "What's the way to"), which this rule ignores, or much of the sentence,
which it does not look at. Swapping a word for its synonym ("tap" / "faucet") is vetoed too: a
miss, never a wrong answer.
"""

from __future__ import annotations

import re
from collections import Counter
from difflib import SequenceMatcher

_APOSTROPHE = "\u2019"  # a typographic apostrophe, as in "don\u2019t"
_WORD = re.compile(r"[A-Za-z][A-Za-z'\u2019\-]*|\d+(?:[.,]\d+)*|[$€£¥%°]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_QUOTED = re.compile(r"(?<![A-Za-z])[\"“”'`]([^\"“”'`]{1,80})[\"“”'`](?![A-Za-z])")
"""A quoted phrase; an apostrophe inside a word ("what's", "Python's") opens or closes none."""
_CODE = re.compile(r"\b\w+(?:[._/]\w+)+\b|\b\w+\(\)")
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "  # noqa: SIM905
        "seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000", "million": "1e6", "billion": "1e9"}
_NEGATIONS = {
    "not", "no", "never", "none", "neither", "nor", "without", "cannot", "nobody", "nothing", "nowhere", "avoid", "except",
}  # fmt: skip
_UNITS = {
    "km", "kilometers", "kilometres", "mile", "miles", "m", "meter", "meters", "metre", "metres", "cm", "mm", "inch", "inches",
    "ft", "feet", "foot", "yard", "yards", "kg", "kilograms", "g", "grams", "lb", "lbs", "pounds", "ounce", "ounces", "oz",
    "l", "liter", "liters", "litre", "litres", "ml", "gallon", "gallons", "celsius", "fahrenheit", "kelvin", "°",
    "usd", "eur", "gbp", "jpy", "dollars", "euros", "yen", "$", "€", "£", "¥", "%", "percent",
    "seconds", "second", "minutes", "minute", "hours", "hour", "days", "day", "weeks", "week", "months", "month",
    "years", "year", "mph", "kph", "gb", "mb", "kb", "tb", "bytes", "bits",
}  # fmt: skip
_TIME_UNITS = {unit + s: unit for unit in ("second", "minute", "hour", "day", "week", "month", "year") for s in ("", "s")}
"""Time units, plural to singular: "a week" and "two weeks" speak of the same unit."""
_NOUN_UNITS = {*_TIME_UNITS, "yard", "yards", "foot", "feet"}
"""Unit words that are also everyday nouns (the time of day, a back yard, sore feet): units only as
amounts (see `_measured`)."""
_UNIT_KINDS = {
    "nautical": "nautical", "square": "square", "sq": "square", "cubic": "cubic", "cu": "cubic", "fluid": "fluid",
    "fl": "fluid", "imperial": "imperial", "troy": "troy", "metric": "metric",
}  # fmt: skip
_MEASURING = {"a", "an", "per", "each", "every", "many", "few", "several", "couple", "into", "in", "to"}
"""Words before a time unit that make it an amount: "a week", "how many hours", "convert days into hours"."""
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
    {"on", "off"},
]  # fmt: skip
_POLAR_SIDE = {w: (g, side) for g, group in enumerate(_POLAR) for side, w in enumerate(sorted(group))}
# Synonyms share a side: "delete" and "remove" say the same, "tiniest" and "smallest" too.
for _same in (("delete", "remove"), ("tiniest", "smallest"), ("biggest", "largest"), ("fewest", "least"),
              ("fewer", "less"), ("max", "maximum"), ("min", "minimum"), ("raise", "increase"), ("lower", "decrease"),
              ("increases", "increase"), ("raises", "increase"), ("decreases", "decrease"), ("lowers", "decrease"),
              ("reduce", "decrease"), ("reduces", "decrease"),
              ("newest", "latest"), ("youngest", "newest"), ("earliest", "oldest")):  # fmt: skip
    _POLAR_SIDE[_same[0]] = _POLAR_SIDE[_same[1]]
_STOP = {"the", "a", "an", "my", "your", "our", "their", "his", "her", "its", "this", "that", "some", "of", "is", "are", "be"}
_DIRECTION = {"from", "to", "into", "than", "vs", "versus", "over", "against", "toward", "towards", "between"}
_PREVENT = {"keep", "keeps", "stop", "stops", "prevent", "prevents", "protect", "protects", "block", "blocks", "ban", "bar"}
"""Verbs whose "from" + "-ing" names what is kept from happening, not where something goes."""
_NOT_NAMES = {"i", "i'm", "i've", "i'd", "i'll", "ok", "okay", "please", "hi", "hello", "thanks"}
_FRAME = {
    "a", "an", "the", "my", "your", "our", "their", "his", "her", "its", "this", "that", "these", "those", "some", "any",
    "i", "me", "you", "we", "us", "it", "they", "them", "one", "someone", "something",
    "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "done", "can", "could", "should",
    "would", "will", "shall", "may", "might", "must", "have", "has", "had", "what", "what's", "how", "how's", "why",
    "when", "where", "which", "who", "whom", "whose", "there", "here", "of", "for", "in", "on", "at", "by", "with",
    "about", "as", "and", "or", "if", "so", "then", "just", "also", "really", "very", "please", "kindly",
    "explain", "describe", "tell", "give", "show", "list", "help", "know", "want", "need", "like", "let", "get", "make",
    "create", "go", "use", "find", "way", "ways", "process", "method", "steps", "step", "exactly", "possible", "able",
    "try", "mean", "means", "meaning", "tips", "advice", "idea", "ideas", "recommend", "suggest", "myself", "yourself",
    "ourselves", "feel", "write", "wrote", "written", "compose", "draft", "put", "turn", "stand", "short", "to",
}  # fmt: skip
"""Words that frame a request rather than say what it is about: swapping them is rewording."""
_FUNCTION = {
    "a", "an", "the", "my", "your", "our", "their", "his", "her", "its", "this", "that", "i", "me", "you", "we", "it",
    "is", "are", "was", "were", "be", "am", "do", "does", "did", "can", "could", "should", "would", "will", "of", "for",
    "in", "on", "at", "by", "with", "to", "from", "and", "or", "as", "about",
}  # fmt: skip
_CONVERSION = {
    "convert", "converting", "change", "changing", "turn", "turning", "transform", "translate", "cast", "switch",
    "switching", "move", "moving", "migrate", "migrating", "transfer", "port", "export", "import",
}  # fmt: skip
_DETERMINERS = {"a", "an", "the", "my", "your", "our", "their", "his", "her", "its", "this", "that"}
_GRADING = {
    "good", "best", "better", "great", "nice", "simple", "simplest", "easy", "easiest", "quick", "quickest", "fast",
    "fastest", "proper", "right", "correct", "effective", "efficient", "real", "actual", "typical", "basic", "whole",
    "entire", "own", "specific", "certain", "particular", "new", "little", "big", "general", "usual", "common", "safe",
    "healthy", "free", "cheap", "full", "complete", "detailed", "brief", "short", "long", "very", "most", "main",
    "term", "word", "phrase", "concept", "notion", "idea", "topic", "subject",
}  # fmt: skip
"""Adjectives that grade what a request asks for rather than name another thing, and nouns that
frame one ("the term gig economy"); see `_narrowed`."""
_SPELLING = [
    ("isation", "ization"), ("ise", "ize"), ("ised", "ized"), ("ising", "izing"), ("our", "or"), ("yse", "yze"),
    ("tre", "ter"), ("yre", "ire"), ("ogue", "og"), ("mme", "m"),
]  # fmt: skip
_SAME_MEANING = [{"improve", "better"}, {"convert", "change", "transform"}, {"remove", "delete"}]
_MEANING = {w: i for i, group in enumerate(_SAME_MEANING) for w in group}
_SUFFIXES = ("ing", "ed", "es", "s", "er", "ers", "ly", "ation", "ations", "ment", "ments", "d", "e")
_ASKS = {"who": "person", "whom": "person", "whose": "person", "where": "place", "when": "time", "why": "reason"}
"""Question words that ask for a kind of answer."""
_WHEN = {"time", "year", "date", "day", "month", "century", "age"}
""""In what year", "what's the best time to": "when", asked with "what" or "which"."""
_WHY = {"causes", "caused", "cause", "makes", "made", "reason", "reasons"}
""""What causes", "what makes", "what's the reason": "why", asked with "what"."""
_HOW_MUCH = {"much", "many", "often", "long", "far", "old", "big", "tall", "fast", "soon", "frequently", "heavy"}
_PERSONS = {"i", "you", "we", "one"}
_WHO = {"person", "artist", "author", "writer", "painter", "composer", "inventor", "scientist", "president", "king", "queen"}
""""Which artist painted": "who", asked with "which"."""
_MODALS = {"should", "do", "can", "must", "would", "could"}
_CONDITIONS = [["if"], ["when"], ["after"]]
_EXACT_KINDS = {"person", "place", "time", "remedy"}
"""Kinds that must be asked in both or neither (a remedy, "what should I do if I got stung", may be
asked as a method, "how do I treat a sting"). The others (reason, amount, method, definition) conflict only
with each other: "What's the lifespan of a car battery?" asks "how long" without saying so, but
"How do I descale a kettle?" and "How often should I descale a kettle?" ask different things."""
_NOT_DEFINED = {"of", "for", "the", "best", "way", "ways", "difference", "reason", "time"}
"""Words that make "what is ..." ask something other than what a thing is: "the speed of light",
"the best way", "used for"."""
_SENTENCE = re.compile(r"[^.!?\n]+")
_FORMAT_PREPOSITIONS = {"as", "in", "into", "with", "using"}
_FORMATS = {
    "list", "bullet", "bulleted", "numbered", "table", "json", "yaml", "csv", "xml", "markdown", "sentence", "paragraph",
    "haiku", "limerick", "sonnet", "tweet", "timeline", "outline", "array", "chart", "diagram", "emoji",
}  # fmt: skip
"""Shapes an answer can be asked in: "as a bulleted list", "in one sentence", "with a table"."""
_PRODUCE = {
    "write", "give", "explain", "summarise", "summarize", "list", "describe", "show", "answer", "reply", "return",
    "format", "present", "output", "respond", "rewrite", "translate", "compare", "tell", "outline", "generate",
}  # fmt: skip
"""Verbs that ask for an answer in a shape; "merge cells in a table" asks for none."""
_AUDIENCES = {
    "kid", "child", "children", "teenager", "student", "expert", "engineer", "developer",
    "programmer", "manager", "executive", "layman", "layperson", "grandma", "grandmother", "grandpa",
    "non-technical", "nontechnical", "professional", "scientist", "doctor", "lawyer", "investor", "customer",
    "five-year-old", "5-year-old", "ten-year-old", "10-year-old", "toddler", "audience",
}  # fmt: skip
"""Who an answer is for: "explain DNS to a network engineer", "... to a child". Not beginners: a
plain question is asked for one anyway."""
_SAME_AUDIENCE = {
    "kid": "child", "children": "child", "five-year-old": "child", "5-year-old": "child", "ten-year-old": "child",
    "10-year-old": "child", "toddler": "child", "layman": "layperson", "non-technical": "layperson",
    "nontechnical": "layperson", "grandma": "grandparent", "grandmother": "grandparent",
    "grandpa": "grandparent", "programmer": "developer",
}  # fmt: skip
_NOT_FORMAT_AFTER = {"cell", "row", "column", "of", "tennis", "leg", "top"}
"""A format word followed by one of these names a thing, not a shape: "a table cell", "a list of"."""


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
    if _named_apart(fa, fb) or (fa.quoted and fb.quoted and fa.quoted != fb.quoted):
        return "entities"
    pivots_differ = bool(fa.pivots and fb.pivots and fa.pivots != fb.pivots)
    if (fa.directional or fb.directional) and (fa.sequence != fb.sequence or pivots_differ):
        return "direction"
    if _crossed(fa.words, fb.words):
        return "direction"
    if _asked_apart(fa.asks, fb.asks):
        return "asks"
    if fa.formats != fb.formats:
        return "format"
    if fa.audience != fb.audience:
        return "audience"
    matcher = _alike(fa.words, fb.words)
    if matcher is None:
        return None  # not the same template: a rewording, left to the embedding's judgement
    if _swapped(fa.words, fb.words, matcher):
        return "substitution"
    if _narrowed(fa.words, fb.words, fa.possessive | fb.possessive):
        return "modifier"
    return None


def _named_apart(a: _Features, b: _Features) -> bool:
    """A named thing on one side only. A name the other side writes too, in lower case or opening a
    sentence ("ZIP code" / "zip code", "How do I stop Excel ..." / "Excel keeps ..."), is the same."""
    na, nb = Counter(a.names), Counter(b.names)
    if na == nb:
        return False
    return any(n not in b.words for n in na - nb) or any(n not in a.words for n in nb - na)


def _asks(text: str) -> set[str]:
    """The kinds of answer the text's questions ask for, from how each sentence opens (its first
    three words: "So when", "In what year"): person, place, time, reason ("why", "what causes"),
    amount ("how much", "how often"), method ("how do I", "how to", "what's the best way"), remedy
    ("what should I do if": what to do after something happened, not whether it is all right),
    definition ("what is a hedge fund?", see `_defines`).
    "when" or "where" further on opens a clause ("what to do when anxious"), not a question."""
    kinds = set()
    text = _QUOTED.sub('""', text)  # a quoted phrase is the subject: "how do you say 'where is the station'"
    for sentence in _SENTENCE.findall(text):
        words = [_normal(w) for w in _WORD.findall(sentence)[:8]]
        for i, w in enumerate(words[:3]):
            rest = words[i + 1 : i + 5]
            first, second = [*rest, "", ""][:2]
            if w in _ASKS:
                kinds.add(_ASKS[w])
            elif w in ("what", "what's", "which"):
                if first in _WHO:
                    kinds.add("person")
                elif first in _WHEN or _the(rest, "time"):
                    kinds.add("time")
                elif (first in _WHY and not _qualities(rest[1:])) or _the(rest, "reason"):
                    kinds.add("reason")
                elif _the(rest, "way"):
                    kinds.add("method")
                elif (rest[:2] == ["to", "do"] and rest[2:3] in _CONDITIONS) or (
                    first in _MODALS and second in _PERSONS and rest[2:3] == ["do"] and rest[3:4] in _CONDITIONS
                ):
                    kinds.add("remedy")  # "what should I do if", "what to do when"
                elif i == 0 and _defines(sentence):
                    kinds.add("definition")
            elif w == "how":
                if first in _HOW_MUCH:
                    kinds.add("amount")
                elif first == "to" or (first in ("do", "can", "should", "would", "could") and second in _PERSONS):
                    kinds.add("method")
            else:
                continue
            break
    return kinds


def _defines(sentence: str) -> bool:
    """The sentence asks what a thing is: "What is a hedge fund?", "What are goroutines?", "What's
    an ETF?", "What does DNS mean?". Not "What is the speed of light?" (an amount asked with "what
    is"), nor anything with an owner ("What is a marathon's distance?") or a longer phrase."""
    raw = [w.replace(_APOSTROPHE, "'") for w in _WORD.findall(sentence)]
    if any(w.lower().endswith("'s") and w.lower() not in ("what's", "it's") for w in raw):
        return False
    words = [w.lower() for w in raw]
    if words[:2] == ["what", "does"] and words[-1:] == ["mean"]:
        return 3 <= len(words) <= 6
    if words[:2] in (["what", "is"], ["what", "are"]):
        thing = words[2:]
    elif words[:1] == ["what's"]:
        thing = words[1:]
    else:
        return False
    thing = thing[1:] if thing[:1] in (["a"], ["an"]) else thing
    return 1 <= len(thing) <= 3 and not _NOT_DEFINED & set(thing)


def _qualities(words: list[str]) -> bool:
    """ "(what makes) a good commit message": the qualities of a kind of thing, not a cause."""
    words = words[1:] if words[:1] in (["a"], ["an"]) else words
    return words[:1] in (["good"], ["great"], ["strong"], ["bad"], ["perfect"], ["successful"])


def _the(words: list[str], noun: str) -> bool:
    """ "[is] the [best] way", "the right time", "the reason"."""
    words = words[1:] if words[:1] == ["is"] else words
    return words[:1] == ["the"] and noun in words[1:3]


def _singular(words: list[str]) -> str:
    w = words[0] if words else ""
    return w[:-1] if w.endswith("s") else w


def _asked_apart(a: set[str], b: set[str]) -> bool:
    """Person, place and time asked on one side only, or a reason, an amount and a method asked one
    against another (see `_EXACT_KINDS`)."""
    if "remedy" in b and "method" in a:  # a remedy is a method for what happened
        a = a | {"remedy"}
    if "remedy" in a and "method" in b:
        b = b | {"remedy"}
    if a & _EXACT_KINDS != b & _EXACT_KINDS:
        return True
    a, b = a - _EXACT_KINDS, b - _EXACT_KINDS
    return bool(a and b and not a & b)


def _formats(words: list[str]) -> set[str]:
    """The shapes asked for: a format word within four words after "as", "in", "with", ..., in a
    request to write, give, explain, ... something."""
    found: set[str] = set()
    if not any(w in _PRODUCE for w in words):
        return found
    for i, w in enumerate(words):
        if w in _FORMAT_PREPOSITIONS:
            for j, x in enumerate(words[i + 1 : i + 5], i + 1):
                stem = x[:-1] if x.endswith("s") and x[:-1] in _FORMATS else x
                if stem in _FORMATS and _singular(words[j + 1 : j + 2]) not in _NOT_FORMAT_AFTER:  # not "a table cell"
                    found.add("list" if stem in ("bullet", "bulleted", "numbered") else stem)
                elif x == "person" and words[j - 1] in ("first", "second", "third"):  # the narrator: "in the second person"
                    found.add(f"{words[j - 1]}-person")
    return found


def _audience(text: str) -> set[str]:
    """Who the answer is asked for, in a request to explain, write, ...: an audience noun within
    four words after "to" or "for" that ends its sentence or its clause ("... to a network
    engineer.", "for kids who love dinosaurs"), or "like I'm five". "Teach a kid to ride" names the
    subject, not the reader."""
    found: set[str] = set()
    for sentence in _SENTENCE.findall(text):
        words = [_normal(w) for w in _WORD.findall(sentence)]
        if not any(w in _PRODUCE or w == "teach" for w in words):
            continue
        for i, w in enumerate(words):
            if w in ("to", "for"):
                for j, x in enumerate(words[i + 1 : i + 5], i + 1):
                    noun = x[:-1] if x.endswith("s") and x[:-1] in _AUDIENCES else x
                    if noun in _AUDIENCES and words[j + 1 : j + 2] in ([], ["who"], ["that"], ["please"]):
                        found.add(_SAME_AUDIENCE.get(noun, noun))
                        break
            elif w == "like" and words[i + 1 : i + 2] in (["i'm"], ["i"]):
                found.add("like-i'm")
    return found


def _alike(a: list[str], b: list[str]) -> SequenceMatcher[str] | None:
    """The two word lists matched, when they share at least half their words in order (the same
    template with a few words changed); None for a rewording."""
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    same = sum(size for _, _, size in matcher.get_matching_blocks())
    return None if same < 2 or same * 2 < max(len(a), len(b)) else matcher


def _swapped(a: list[str], b: list[str], matcher: SequenceMatcher[str]) -> bool:
    """Worded alike, but a content word was swapped for another, or two traded places around the
    same words ("Rome conquered Carthage" / "Carthage conquered Rome"); `matcher`: theirs (`_alike`)."""
    left = [(i, w) for i, w in enumerate(a) if w not in _FRAME]
    right = [(j, w) for j, w in enumerate(b) if w not in _FRAME]
    only_left = [x for _, x in left if not any(_variant(x, y) for _, y in right)]
    only_right = [y for _, y in right if not any(_variant(x, y) for _, x in left)]
    if only_left and only_right:
        return True  # a word added on one side alone is often a paraphrase's detail ("capital city")
    for op, i1, i2, j1, j2 in matcher.get_opcodes():  # ...but not one put in a frame word's place
        if op == "replace" and i2 - i1 == j2 - j1 == 1 and (a[i1] in only_left or b[j1] in only_right):
            return True  # "zoom in" / "zoom out", "possible" / "impossible"
    # Moves: frame words count here ("list" in "a list to a tuple"), function words do not.
    where = {x: j for i, x in enumerate(a) if x not in _FUNCTION for j, y in enumerate(b) if y not in _FUNCTION and x == y}
    movable = [(i, x) for i, x in enumerate(a) if x in where]
    for n, (i, x) in enumerate(movable):
        for k, y in movable[n + 1 :]:
            between = _unarticled(a[i + 1 : k])
            if where[y] < where[x] and between and between == _unarticled(b[where[y] + 1 : where[x]]):
                return True
    return False


def _crossed(a: list[str], b: list[str]) -> bool:
    """A conversion whose two sides trade places, however many words each takes ("convert a dict to
    a JSON string" / "convert a JSON string to a dict"): a content word before the "to" on one side
    stands after it on the other, and one after it before."""
    sa, sb = _conversion(a), _conversion(b)
    if sa is None or sb is None:
        return False
    return bool(sa[0] & sb[1] and sa[1] & sb[0])


def _conversion(words: list[str]) -> tuple[set[str], set[str]] | None:
    """The content words between a conversion verb and its "to" / "into", and after that."""
    for i, w in enumerate(words):
        if w in _CONVERSION:
            rest = words[i + 1 :]
            k = next((j for j, x in enumerate(rest) if x in ("to", "into")), None)
            if k is not None:
                return {x for x in rest[:k] if x not in _FRAME}, {x for x in rest[k + 1 :] if x not in _FRAME}
    return None


def _narrowed(a: list[str], b: list[str], possessive: set[str]) -> bool:
    """Worded alike, but one side names a kind of the other's thing: a word put between a
    determiner and a noun that both share ("tie a tie" / "tie a bow tie", "the button" / "the reset
    button"). Words that grade rather than narrow ("a good way", "a quick recipe") and owners ("the
    body's immune system") do not count. Called on texts worded alike (`_alike`)."""
    for x, y in ((a, b), (b, a)):
        pairs = {(x[i - 1], x[i]) for i in range(1, len(x))}
        for j in range(1, len(y) - 1):
            det, extra, noun = y[j - 1], y[j], y[j + 1]
            named = det in _DETERMINERS and extra not in _FRAME | _GRADING | possessive and (det, noun) in pairs
            if named and not any(_variant(extra, w) for w in x):
                return True
    return False


def _unarticled(words: list[str]) -> list[str]:
    """Articles do not count: "to a" links two words as "to" does."""
    return [w for w in words if w not in ("a", "an", "the")]


def _variant(a: str, b: str) -> bool:
    """The same word in another form or spelling: "taking" / "take", "colour" / "color"."""
    if a in _MEANING and _MEANING[a] == _MEANING.get(b):
        return True
    a, b = _stem(a), _stem(b)
    return a == b or (min(len(a), len(b)) >= 4 and (a.startswith(b) or b.startswith(a)))


def _stem(word: str) -> str:
    for british, american in _SPELLING:
        if word.endswith(british):
            word = word[: -len(british)] + american
            break
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _opposed(a: dict[int, set[int]], b: dict[int, set[int]]) -> bool:
    """Both texts use a word of the same polar group, on different sides (largest / smallest).
    A group only one text uses says nothing: paraphrases drop such words ("best way to" / "how to")."""
    return any(a[g] != b[g] for g in a.keys() & b.keys())


class _Features:
    __slots__ = (
        "asks", "audience", "directional", "formats", "names", "negated", "numbers", "pivots", "polar", "possessive", "quoted",
        "sequence", "units", "words",
    )  # fmt: skip

    def __init__(self, text: str) -> None:
        words = _WORD.findall(text)
        lowered = [_normal(w) for w in words]
        self.words = lowered
        owners = zip(lowered, words, strict=True)
        self.possessive = {w for w, raw in owners if raw.replace(_APOSTROPHE, "'").endswith(("'s", "'S"))}
        # "three-day" and "two-player" count their number ("five-year-old" is a reader; see _audience)
        parts = [p for w in lowered for p in (w.split("-") if "-" in w and not w.endswith("-old") else [w])]
        numbers = [_NUMBER_WORDS.get(w, w) for w in parts if _NUMBER.fullmatch(w) or w in _NUMBER_WORDS]
        self.numbers = Counter(n.replace(",", "") for n in numbers)
        said = [i for i, w in enumerate(lowered) if w == "no" and lowered[i - 1 : i] in (["say"], ["says"], ["said"], ["saying"])]
        negations = sum(w in _NEGATIONS or w.endswith("n't") for w in lowered) - len(said)  # "say no" is to refuse
        self.negated = negations % 2 == 1
        # "In what year" asks a time; it does not measure in years.
        self.units = {
            _unit(parts, i)
            for i, w in enumerate(parts)
            if w in _UNITS and parts[i - 1 : i] not in (["what"], ["which"]) and (w not in _NOUN_UNITS or _measured(parts, i))
        }
        self.polar: dict[int, set[int]] = {}
        for w in lowered:
            if w in _POLAR_SIDE:
                group, side = _POLAR_SIDE[w]
                self.polar.setdefault(group, set()).add(side)
        self.quoted = {q.strip().lower() for q in _QUOTED.findall(text)}
        self.names = _names(text)
        self.directional = any(w in _DIRECTION and not _undirected(lowered, i) for i, w in enumerate(lowered))
        named = set(self.names)
        self.sequence = [w for w in lowered if w in named or w in self.numbers or w in self.units]
        self.pivots = _pivots(lowered)
        self.asks = _asks(text)
        self.formats = _formats(lowered)
        self.audience = _audience(text)


def _unit(words: list[str], i: int) -> str:
    """The unit at `i`, with the word that makes it another unit: "nautical miles", "square feet",
    "fluid ounces" are not miles, feet and ounces."""
    unit = _TIME_UNITS.get(words[i], words[i])
    kind = _UNIT_KINDS.get(words[i - 1]) if i else None
    return f"{kind} {unit}" if kind else unit


def _measured(words: list[str], i: int) -> bool:
    """The unit word at `i` is an amount ("3 days", "a week", "per hour", "how many weeks", "hours
    in a day", "square feet"), not the time of something or a thing ("later in the day", "all day",
    "my back yard", "my feet hurt")."""
    before = words[i - 1] if i else ""
    if _NUMBER.fullmatch(before) or before in _NUMBER_WORDS or before in _MEASURING or before in _UNIT_KINDS:
        return True
    return words[i + 1 : i + 3] in (["in", "a"], ["in", "an"], ["in", "one"]) or words[i + 1 : i + 2] == ["to"]


def _normal(word: str) -> str:
    w = word.lower().replace(_APOSTROPHE, "'")
    return w[:-2] if w.endswith("'s") else w


def _pivots(words: list[str]) -> list[tuple[str, str]]:
    """The content words on either side of each direction word: ("savings", "checking") in
    "from savings to checking", ("tea", "coffee") in "tea healthier than coffee"."""
    content = [(i, w) for i, w in enumerate(words) if w not in _STOP]
    pivots = []
    for i, w in enumerate(words):
        if w in _DIRECTION and (w != "to" or "from" in words) and not _undirected(words, i):  # a bare "to": an infinitive
            before = [c for j, c in content if j < i and c not in _DIRECTION]
            after = [c for j, c in content if j > i and c not in _DIRECTION]
            pivots.append((before[-1] if before else "", after[0] if after else ""))
    return pivots


def _undirected(words: list[str], i: int) -> bool:
    """The direction word at `i` points nowhere: a comparison (`_symmetric`), or "from" saying what
    is kept from happening ("keep the bees from swarming", "stop goggles from leaking")."""
    if words[i] == "from" and words[i + 1 : i + 2] and words[i + 1].endswith("ing"):
        return any(w in _PREVENT for w in words[max(0, i - 5) : i])
    return _symmetric(words, i)


def _symmetric(words: list[str], i: int) -> bool:
    """The direction word at `i` states a comparison, which reads the same both ways: "the
    difference between X and Y" asks what "how does Y differ from X" does."""
    before = words[i - 1] if i else ""
    return (words[i] == "from" and before.startswith("differ")) or (words[i] == "between" and before.startswith("difference"))


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
