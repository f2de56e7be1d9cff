"""The task apart from the material: what a request asks for, and what it hands over to work on.

A prompt is often an instruction wrapped around material: a pasted report and "which line was
late most often?", a transcript and "summarise this", code and "what does it print?". The
material's size sets the price of a request, not the skill it needs, so the router judges the
instruction and counts the material separately. Pure and cheap (bounded work on any input).

How the last user turn is split:
- fenced code blocks are material (code), and so are a spreadsheet formula on a line of its own
  ("=IFERROR(INDEX(...))") and a SQL statement of some lines written in capitals ("SELECT ...\nFROM
  ...\nJOIN ..."), and an email's signature (`-- ` and the lines under it);
- a prompt template's sections say their role by their names: the text in paired tags
  (`<document>...</document>`, `<task>...</task>`) and under headings such as `### Instruction`
  or `### Input` is instruction when the section is named for the ask (instruction, task,
  question, ...), dropped when named for the answer and empty (`### Response`), and material
  otherwise (headings count when one names the ask or the answer: a pasted document's "## Notes"
  is not a template); what lies outside the sections is split as below;
- the rest is cut into blocks at blank lines, at rule lines (`---`) and before a letter's salutation
  that opens a later line ("Hola, somos ...", "Dear Ms Romero,"); worked examples and the input
  after them (blocks of the same labels in the same order, "Phrase : ... / Corrigé : ...", the last
  answer left empty) are material, and so is a letter under its instruction; a block is material
  when it reads as data (several lines of "Name: ...", CSV rows, columns set apart by tabs, runs of
  spaces or spaced dashes, log lines that start with a date or a time, an invoice's items with their
  amounts, numbered or bulleted entries, a rule book's "§ 3" sections, JSON, a stack trace, a diff,
  lines quoted with `>` or each one quotation, a question with the answer given to it ("Question:
  ... Answer: ...") that a judge is to rate) or, among several blocks, is long (more than
  `LONG_WORDS` words); when some block is material, only the first or last block can be the
  instruction: the one with a question, an ending colon or an ask's opening word ("Return only ...",
  "Which ..."), else the one with a task word (up to twice as long), else a short one; a line that
  names the data under it ("Selection A1:E9 (sheet 'Brews'):") is material unless nothing else asks,
  and so is a title in capitals ("ACCOUNT SUMMARY"); the lines around data that ask join the
  instruction: one above it that ends with a colon ("Using the table, what is the average:"), a
  sentence under it ("Weigh the evidence record by record"), whatever their commas;
- short blocks of which none asks outright: the first or last one where a task word bids ("Using
  the report, quantify ...", not "after the pay review") is the instruction;
- within one block, text after a colon that opens a long tail (not a time's colon, nor one in
  brackets, nor one whose data was taken out already), or a long quotation, is material; the tail's
  last sentence, with the questions just before it, joins the instruction when it asks and what
  comes before the colon neither asks outright nor bids with a task word ("We want to build our own
  timetabling system: <needs>. Design the data model.", "Cotisation actuelle : <figures>. Quelle
  cotisation maximise le résultat ? Et avec un cinquième court ?"); a quotation of some words that
  ends the turn after its question or colon is material too ('Is this text from my bank? "Your
  card ending 4417 is blocked ..."');
- with no instruction found, the first sentence is the instruction;
- a request to find what meets its conditions ("Find a rota or tell me it's impossible", "a plan
  that satisfies everything", a line that ends with "con estas condiciones:") keeps the conditions
  listed in its material ("- Dot can't do dishes"): they join the instruction.

A sentence that asks only how to answer ("Think step by step before you answer.", "Show your
reasoning, then give the answer on its own line.", "step by step please:",
"一歩ずつ考えてから答えてください。") is dropped from the instruction (`unstyled`): prompt writers add it to
easy requests and hard ones alike.

Earlier turns count as well: a short follow-up ("ok, now make it thread-safe"), or an answer to
the assistant's question, continues the task of the user turn before it, whose instruction is kept
as `earlier` (or, where that turn asked nothing, "Tram depot shift notes:" and a document, whose
text is material); a turn that only closes the exchange ("great, thank you!", "oh that makes sense
now, thank you!") continues nothing. The system prompt is the instruction where the user's turn is
material only, or where it sets one task for whatever users send ("Route each patron message to one
queue", "Extract the time and place.").
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from backends.types import content_text

LONG_WORDS = 70
"""A block of more words than this is material, not the instruction."""
SCAN_CHARS = 60_000
"""Only this much of a turn is read for the split, half from its start and half from its end (an
instruction sits before or after what it asks about); the material's size still counts whole."""
FOLLOW_UP_WORDS = 14
"""A last instruction this short, after earlier user turns, continues the one before it."""

_FENCE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_FORMULA = re.compile(r"^[ \t]*=[ \t]*(?:[A-Z][A-Z0-9.]*\(|\$?[A-Z]{1,3}\$?\d+\b)[^\n]*$", re.MULTILINE)
"""A spreadsheet formula on a line of its own ("=IFERROR(INDEX(Rates!B:B, ...))", "=B2*C2"): code to read."""
_SQL = re.compile(
    r"^[ \t]*(?:SELECT|WITH|INSERT INTO|UPDATE|DELETE FROM|CREATE (?:TABLE|VIEW|INDEX))\b[^\n]*"
    r"(?:\n[ \t]*(?:(?:SELECT|FROM|WHERE|AND|OR|(?:LEFT |RIGHT |INNER |OUTER |FULL |CROSS )*JOIN|ON|GROUP BY|ORDER BY|HAVING|"
    r"LIMIT|OFFSET|UNION|VALUES|SET|RETURNING|WINDOW|CASE|WHEN|ELSE|END)\b|[ \t]+\S|\)|;)[^\n]*)+",
    re.MULTILINE,
)
"""A SQL statement of two lines or more, not fenced ("SELECT c.tag, l.calving_date\nFROM cows c\nJOIN ..."):
code to read. Its keywords in capitals, as SQL is written to be read."""
_SQL_STARTS = ("SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "CREATE")
SQL_CHARS = 20_000
"""A turn longer than this is not searched for SQL statements (the search would cost more than the
rest of the split): it is in a short turn that a statement read as prose becomes the instruction."""
_BLANK = re.compile(r"\n[ \t]*\n+")
_DATA_LINE = re.compile(
    r"^\s*(?:[-*•]\s|\d+[.)]\s|\[[^\]]{1,40}\]|\d{1,4}[-/.:]\d{1,2}[-/.:]\d{1,4}\b"  # a log line's date or time
    r"|[\w .'-]{1,30}(?:\s*\([^)\n]{1,12}\))?(?::\s|\uff1a)|[^,\n]*(?:,[^,\n]*){2,}$|\|.*\|"
    r"|[^\n]{2,60}?\s(?:[€$£]\s?)?\d{1,3}(?:[.,\s]\d{3})*[.,]\d{2}\s*(?:€|eur|usd|\$|£)?\s*$"  # an invoice's line item
    r"|>|(?:§|art\.|article|artikel|section)\s?\d"  # a quoted reply's lines; a rule book's numbered sections
    r'|["“«「][^"”»」\n]+["”»」][,.]?\s*$'  # a line that is one quotation: messages listed to tag or sort
    r'|"[^"\n]{1,60}"\s*:|[\[\]{}],?\s*$'  # JSON's keys and brackets
    r'|traceback \(most recent call last\)|file "[^"\n]+", line \d|at [\w$<>]+(?:\.[\w$<>]+)+ ?\('  # a stack trace
    r"|(?:---|\+\+\+|@@) |\+"  # a diff
    # columns set apart by tabs or runs of spaces (not the two spaces after a full stop); a gap starts
    # after a character and takes its whole run, so a line of spaces is read once, not once per space
    r"|\S[^\n]*?(?<=[^\s.!?])(?:\t[\t ]*+| {2,}+)\S[^\n]*?(?<=[^\s.!?])(?:\t[\t ]*+| {2,}+)\S"
    # or by spaced dashes, on a line that does not end a sentence ("Mon 3rd - Bramley & Co - 2.5h", not
    # "We drove - slowly - to the coast.")
    r"|(?=[^\n]*[^\s.!?][ \t]*$)\S[^\n]*? [-\u2013\u2014] \S[^\n]*? [-\u2013\u2014] \S)",
    re.MULTILINE | re.IGNORECASE,
)
_SIGNATURE = re.compile(r"^-- ?\n(?:[^\n]*(?:\n|$)){1,6}", re.MULTILINE)
"""An email's signature: the `-- ` line and up to six lines after it."""
_QUOTED = re.compile(r"[\"“«「『]([^\"”»」』]{150,})[\"”»」』]")
_QUOTED_LAST = re.compile(r"(?<=[?:\uff1f\uff1a])\s*[\"“«「『]([^\"”»」』]{20,})[\"”»」』]\s*$")
"""A quotation that ends the turn after its question or colon ('What's the coach in this message? "Your
ticket is confirmed: ..."'): what the question is about."""
_COLON_TAIL = re.compile(r"^([^()]{5,300}?[:\uff1a])(?!\d)\s*(.+)$", re.DOTALL)
"""An instruction, its colon, and the material after it: the colon not in brackets ("(2025: 44,900)")
and not a time's ("7:00")."""
_SENTENCE = re.compile(r"(?<=[.!?。\uff01\uff1f])\s*")
_OPENS = re.compile(r"[:\uff1a]\s*$")
"""A colon at the end: what follows is what the text asks about ("Tag this list:"), or what it names
("Selection A1:E9 (sheet 'Brews'):")."""
_STRONG_CUE = re.compile(
    r"[?\uff1f]|^\W*(please|can you|could you|write|list|summar|translate|extract|classify|explain|"
    r"what|which|why|how|who|when|where|is |are |does|do |give|find|make|tell|rewrite|draft|answer|read|based on|using|from th|"
    r"(?:return|output|respond|reply|provide)\b(?!\s*[:\uff1a])|"
    r"fasse|übersetz|erkläre|schreib|résume|traduis|explique|écris|resume|traduce|explica|escribe|"
    r"请|請|把|这|次の|この|以下|इस|कृपया)",
    re.IGNORECASE,
)
_WEAK_CUE = re.compile(
    r"\b(summar\w*|translat\w*|extract|classify|explain|analy[sz]e|assess|list|write|draft|rewrite|answer|"
    r"compare|evaluate|critique|identify|suggest|recommend|find|count|label|tell me|propose|plan|build|design|"
    r"quantify|justify|prove|fix|review|improve|convert|format|turn|implement|solve|derive|show|"
    r"weigh|calculate|compute|work out|determine|decide|berechne\w*|ermittle\w*|calcule[rz]?|détermine[rz]?|trouvez|"
    r"trouve(?=\s+(?:le|la|les|l'|un|une|des|moi)\b)|calcula|calculen|determina|encuentra|pull|"
    r"fass\w*|übersetz\w*|erklär\w*|schreib\w*|beweis\w*|entw[ie]rf\w*|analysier\w*|nenne|plane|"
    r"résum\w*|tradu\w*|expli\w*|écri\w*|rédige\w*|démontr\w*|prouve\w*|conçoi\w*|concev\w*|analyse[rz]?|"
    r"resum\w*|escrib\w*|demuestr\w*|demostr\w*|diseñ\w*|analiz\w*|organi[sz]\w*|dime)\b"
    r"|请|帮我|证明|设计|分析|总结|翻译|解释|写一|ください|証明|設計|要約|翻訳|説明|書いて|कीजिए|बताइए|लिखिए|समझाइए|बनाइए",
    re.IGNORECASE,
)
_RULE = re.compile(r"^[ \t]*(?:-{3,}|\*{3,}|={3,}|_{3,})[ \t]*$", re.MULTILINE)
_TAG = re.compile(r"<(/?)([A-Za-z][\w-]{0,30})(?:\s[^<>\n]{0,200})?>")
TAGS_READ = 200
"""At most this many tags, and half as many headings, are read for a template's sections (a
template has a handful; what lies beyond them is split as plain text)."""
_ASKING = (
    r"instructions?|task|question|query|request|prompt|user|aufgabe|frage|anweisung|consigne|tâche|pregunta|tarea|"
    r"instrucci[oó]n(?:es)?|指示|任务|任務|问题|質問|タスク|निर्देश|प्रश्न"
)
_ANSWERING = r"response|answer|output|completion|assistant|antwort|réponse|respuesta|回答|答案|उत्तर"
_GIVEN = (
    r"input|context|document|documents|text|data|passage|source|background|examples?|email|article|transcript|"
    r"notes|code|eingabe|kontext|contexte|entrada|contexto|texto|入力|文脈|输入|上下文|इनपुट|संदर्भ"
)
_HEADING = re.compile(rf"^[ \t]*#{{1,6}}[ \t]*({_ASKING}|{_ANSWERING}|{_GIVEN})[ \t]*[:\uff1a]?[ \t]*#*[ \t]*$", re.I | re.M)
_ASKING_NAME = re.compile(rf"(?:{_ASKING})\Z", re.I)
_ANSWERING_NAME = re.compile(rf"(?:{_ANSWERING})\Z", re.I)
_CLOSING = re.compile(
    r"^\W*(?:(?:oh|ah+|aha|ok(?:ay)?|right|alright|yes|yeah)\W+)?"  # "oh that makes sense now, thank you!"
    r"(?:thanks?|thank you|(?:that |it )?makes sense|i see|thx|ty|cheers|great|perfect|awesome|cool|nice|excellent|"
    r"lovely|brilliant|exactly|"
    r"that'?s (?:it|all|perfect|great|exactly it)|got it|works|worked|that works|all good|sorted|spot on|ta|"
    r"danke|super|prima|merci|parfait|génial|gracias|perfecto|genial|"
    r"谢谢|多谢|太好了|好的|ありがとう|完璧|了解|धन्यवाद|शुक्रिया|बढ़िया)(?![a-z])",  # a whole word: "tables too" is no "ta"
    re.IGNORECASE,
)
_GOES_ON = re.compile(
    r"[?\uff1f]|\bnow\b(?!\s*[,.!])|\b(?:go|continue|keep|more|full|next|again|also|but|and|then|weiter|jetzt|continue[rz]?|encore|"
    r"sigue|ahora|más)\b|继续|然后|続け|次|जारी|अब",
    re.IGNORECASE,
)
_ELSEWHERE = re.compile(
    r"\b(?:unrelated|by the way|btw|different question|another question|übrigens|au fait|por cierto)\b|顺便|ところで|वैसे",
    re.IGNORECASE,
)
_ARRIVING = (
    r"messages?|reviews?|tickets?|e-?mails?|texts?|quer(?:y|ies)|requests?|inputs?|comments?|posts?|sentences?|"
    r"inquir\w*|enquir\w*|questions?|complaints?|feedback|documents?|transcripts?|notes?|reports?|logs?|entries|letters?|"
    r"articles?|paragraphs?|passages?|lines?|conversations?|chats?|pages?|briefe?|lettres?|cartas?|artikel|"
    r"\w*(?:nachricht|anfrage|bewertung|kommentar|eingabe|meldung)\w*|avis|demandes?|textes?|courriels?|commentaires?|"
    r"mensajes?|reseñas?|consultas?|textos?|correos?|comentarios?|solicitud\w*"
)
_WHAT_ARRIVES = re.compile(
    rf"\b(?:{_ARRIVING})\b|消息|评论|邮件|文本|工单|咨询|请求|反馈|留言|問い合わせ|メッセージ|レビュー|文章|テキスト|メール|質問|感想"
    r"|संदेश|समीक्षा|टिप्पणी|ईमेल|प्रश्न|प्रतिक्रिया",
    re.IGNORECASE,
)
_WORKS_ON = re.compile(
    r"\b(?:classif\w*|categori[sz]\w*|triage\w*|translat\w*|summari[sz]\w*|extract\w*|proofread\w*|klassifizier\w*|"
    r"kategorisier\w*|übersetz\w*|zusammenfass\w*|extrahier\w*|class(?:e|ez|er|ifie\w*)|catégoris\w*|tradui\w*|"
    r"fass\w*\s+(?:[\w-]+\s+){0,6}?zusammen|résume\w*|extrai\w*|clasific\w*|categoriz\w*|traduc\w*|resum\w*|extrae\w*|"
    r"rewrit\w*|rephras\w*|paraphras\w*|reformul\w*|umformulier\w*|ordne\w*|zuordn\w*|categor(?:y|ies)|kategorie\w*|"
    r"catégorie\w*|categoría\w*|output only|only output|"
    # fields to fill from what arrives ("Return JSON with antibody, host, clone and lot from the user's note")
    r"(?:return|output|reply with|respond with|give)\s+(?:a\s+|the\s+|only\s+)?json\s+(?:object\s+)?(?:with|of|containing)|"
    # answers that pick from a set ("Output one of: positive, negative, mixed", "One word.")
    r"sum (?:this |it )?up|tl;?dr|sentiment|stimmung|one of|one word|one label|eine[ns]? der|ein wort|l'une des|"
    r"un seul mot|uno de|una palabra|"
    # words that are nouns as often as verbs ("the product label", "a credit score") count before what they work on
    rf"(?:label|tag|score|route|rate|sort)s?\s+(?:[\w'-]+\s+){{0,3}}?(?:each|every|incoming|all|{_ARRIVING}))\b"
    r"|分类|归类|翻译|总结|摘要|提取|标注|之一|情感|情绪|改写|只输出|分類|翻訳|要約|抽出|判定|いずれか|感情|言い換え|のみ出力"
    r"|वर्गीकृत|अनुवाद|सारांश|में से एक|भावना",
    re.IGNORECASE,
)
_WORD = re.compile(r"\w+")
_CJK = re.compile("[\u3040-\u9fff]")


@dataclass(frozen=True, slots=True)
class Task:
    instruction: str
    """What the last user turn asks for, material removed (capped in length)."""
    material: str
    """What it hands over to work on (pasted text, data, code), as far as it was read."""
    material_chars: int
    """The size of the material, all of it."""
    code: bool
    """Some material is code."""
    data: bool
    """Some material reads as data (a table, a transcript, a list of entries)."""
    earlier: str
    """The instruction of the user turn before, when the last one is a short follow-up."""


def words(text: str) -> int:
    """About how many words a text has (a CJK character counts as one)."""
    return len(_WORD.findall(text)) + len(_CJK.findall(text))


def more_words(text: str, n: int) -> bool:
    """`words(text) > n`, without counting all of a long text: a prefix with more is enough."""
    if len(text) > 40 * (n + 1) and words(text[: 40 * (n + 1)]) > n:
        return True
    return words(text) > n


TAIL_CHARS = 4000
"""A block's last sentence is looked for in this much of its end (a sentence of more than
`LONG_WORDS` words is no instruction)."""
DATA_LINES_READ = 100
"""Whether a block reads as data is judged from its first this many lines (a 70,000-character log
read whole took about 3 ms, and a split asks of a block more than once)."""


_JUDGED = re.compile(
    r"^\s*(?:question|prompt|query|input|frage|pregunta|问题|質問|प्रश्न)\s*[:\uff1a].*\n"
    r"\s*(?:answer|response|output|reply|antwort|réponse|respuesta|回答|答案|उत्तर)\s*[:\uff1a]\s*\S",
    re.IGNORECASE | re.MULTILINE,
)
"""A question and the answer given to it ("Question: ...\nAnswer: ..."): what a judge is asked to rate."""


def _is_data(block: str) -> bool:
    if _JUDGED.search(block[:TAIL_CHARS]):
        return True
    lines = [line for line in itertools.islice(block.splitlines(keepends=True), 4 * DATA_LINES_READ) if line.strip()]
    lines = lines[:DATA_LINES_READ]  # with their line ends: "Note:" at a line's end reads as a label
    return len(lines) >= 4 and sum(1 for line in lines if _DATA_LINE.match(line)) >= max(3, len(lines) // 2)


def _untitled(text: str) -> str:
    """`text` without its lines in capitals: a document's title ("ACCOUNT SUMMARY") asks nothing."""
    return "\n".join(line for line in text.splitlines() if not line.isupper())


_PROSE = re.compile(r"^\s*[¿¡]?[^\W\d_][^\n|\t]*[.!?\u3002\uff01\uff1f]\s*$")
"""A line that starts with a letter (after a Spanish "¿" or "¡") and ends a sentence: written, not a
record, whatever its commas."""


def _loose(line: str, *, under: bool = False, csv: bool = True) -> bool:
    """A line around data that is not part of it: neither a record nor a CSV header ("date,amount"),
    whatever its commas when it ends with a colon above the data ("Using the list, what is the
    average:") or is a sentence of some length under it ("There were two others, both weavers.
    Weigh the evidence record by record, ..."), or is a short one above data that is not CSV
    (`csv`: "farm shop inbox, tag each one ORDER, COMPLAINT or QUESTION" above numbered messages)."""
    if _DATA_LINE.match(line.replace(",", "")):  # a record however its commas read ("Customer: Hi, ...")
        return False
    if under:
        return "," not in line or bool(_PROSE.match(line) and more_words(line, 12))
    # "Using the list, what is the average:"; a short line above lines that are no CSV is no header
    return "," not in line or bool(_OPENS.search(line)) or not (csv or more_words(line, 20))


def _peel(block: str) -> tuple[str, str, str]:
    """A data block's leading and trailing lines that are not data ("Tag this list:" above a table,
    "whats the account number" under a bill), and the data between them."""
    lines = block.splitlines()
    middle = (lines[1:-1] or lines)[:DATA_LINES_READ]
    csv = 2 * sum(1 for line in middle if line.count(",") >= 2) >= len(middle)  # most lines are CSV rows
    head = 0
    while head < len(lines) - 1 and head < 3 and _loose(lines[head], csv=csv):
        head += 1
    tail = len(lines)
    while tail > head + 1 and len(lines) - tail < 3 and _loose(lines[tail - 1], under=True):
        tail -= 1
    return "\n".join(lines[:head]), "\n".join(lines[tail:]), "\n".join(lines[head:tail])


@dataclass(frozen=True, slots=True)
class Split:
    instruction: str
    material: str
    code: bool
    data: bool
    found: bool
    """The instruction was found (a short block, a cue); False when it is the first sentence of
    what reads as material only."""


@dataclass(frozen=True, slots=True)
class _Sections:
    asked: list[str]
    """The text of sections named for the ask."""
    given: list[str]
    """The text of the other named sections: material."""
    rest: str
    """What lies outside every named section."""


def _paired(text: str) -> list[tuple[str, str, int, int]]:
    """The outermost paired tags (`<task>...</task>`): name, inner text, and the span they take, in
    order. An open tag never closed (`Vec<u16>`) pairs with nothing. Linear in the tags read: a
    close tag looks down the open ones only when one of its name is open, and what it passes over
    it closes."""
    found: list[tuple[str, str, int, int]] = []
    stack: list[tuple[str, int, int]] = []  # open tags: name, where the tag starts, where its body starts
    opened: dict[str, int] = {}
    for i, tag in enumerate(_TAG.finditer(text)):
        if i >= TAGS_READ:
            break
        name = tag.group(2).lower()
        if not tag.group(1):
            stack.append((name, tag.start(), tag.end()))
            opened[name] = opened.get(name, 0) + 1
            continue
        if not opened.get(name):
            continue
        at = len(stack) - 1
        while stack[at][0] != name:
            at -= 1
        _, start, body = stack[at]
        for closed, _, _ in stack[at:]:
            opened[closed] -= 1
        del stack[at:]
        while found and found[-1][2] > start:  # pairs inside this one are part of its text
            found.pop()
        found.append((tag.group(2), text[body : tag.start()], start, tag.end()))
    return found


def _sections(text: str) -> _Sections | None:
    """A prompt template's named sections (paired tags, headings that name a role); None when the
    text has none."""
    paired = _paired(text) if "</" in text else []
    cuts = [0, *(at for _, _, start, end in paired for at in (start, end)), len(text)]
    rest = "\n\n".join(text[cuts[k] : cuts[k + 1]] for k in range(0, len(cuts), 2))
    named = [(name, body) for name, body, _, _ in paired]
    headings = list(itertools.islice(_HEADING.finditer(rest), TAGS_READ // 2)) if "#" in rest else []
    if not any(_ASKING_NAME.match(h.group(1)) or _ANSWERING_NAME.match(h.group(1)) for h in headings):
        headings = []  # "## Examples" and "## Notes" alone are a pasted document's, not a template's
    if headings:
        outside = [rest[: headings[0].start()]]
        for heading, after in zip(headings, [*headings[1:], None], strict=True):
            named.append((heading.group(1), rest[heading.end() : after.start() if after else len(rest)]))
        rest = "\n\n".join(outside)
    if not named:
        return None
    asked = [body.strip() for name, body in named if _ASKING_NAME.match(name) and body.strip()]
    given = [body.strip() for name, body in named if not _ASKING_NAME.match(name) and body.strip()]
    return _Sections(asked, given, rest)


def _ends(text: str) -> str:
    """The first and last `SCAN_CHARS // 2` characters of a long turn, cut at line ends where one is
    near (half a log line, "10:37 worker-1 timeout", would read as text, not data)."""
    head, tail = text[: SCAN_CHARS // 2], text[-SCAN_CHARS // 2 :]
    end = head.rfind("\n", len(head) - 1000)
    start = tail.find("\n", 0, 1000)
    return f"{head[:end] if end > 0 else head}\n\n{tail[start + 1 :] if start >= 0 else tail}"


def split_turn(text: str) -> Split:
    """One turn's text apart: instruction and material (an email's signature is material)."""
    read = text if len(text) <= SCAN_CHARS else _ends(text)
    signatures = _SIGNATURE.findall(read) if "--" in read else []
    split = _split_read(_SIGNATURE.sub("\n\n", read) if signatures else read)
    if signatures:
        split = replace(split, material="\n\n".join(m for m in (split.material, *signatures) if m))
    return _with_conditions(split)


def _split_read(read: str) -> Split:
    code_blocks = _FENCE.findall(read)
    rest = _FENCE.sub("\n\n", read)
    if "=" in rest and (formulas := _FORMULA.findall(rest)):
        code_blocks += formulas
        rest = _FORMULA.sub("\n", rest)
    if len(rest) <= SQL_CHARS and any(start in rest for start in _SQL_STARTS) and (statements := _SQL.findall(rest)):
        code_blocks += statements
        rest = _SQL.sub("\n\n", rest)
    sections = _sections(rest)
    if sections is None:
        return _split_blocks(rest, code_blocks, read)
    around = sections.rest.strip()  # "Answer in one word." beside the sections, or a document
    if not sections.asked and not around:
        return _split_blocks("\n\n".join(sections.given), code_blocks, read)
    given_data = any(_is_data(b) for g in sections.given for b in _BLANK.split(g))
    if sections.asked:
        short = bool(around) and not more_words(around, LONG_WORDS)
        asked = [*sections.asked, around] if short else sections.asked
        given = [*code_blocks, *sections.given, *([around] if around and not short else [])]
        return Split("\n".join(asked)[:2000], "\n\n".join(given), bool(code_blocks), given_data, True)
    inner = _split_blocks(around, [], around)
    material = "\n\n".join(m for m in [*code_blocks, inner.material, *sections.given] if m)
    return Split(inner.instruction, material, bool(code_blocks) or inner.code, inner.data or given_data, inner.found)


def _last_sentence(text: str) -> str:
    """The last sentence of `text`, looked for in its last `TAIL_CHARS` characters."""
    return next((s for s in reversed(_SENTENCE.split(text.rstrip()[-TAIL_CHARS:])) if s.strip()), "")


ASKING_END = 4
"""At most this many sentences at the end of a colon's tail are read for what it asks."""


def _asking_end(tail: str) -> str:
    """What the end of a colon's tail asks: its last sentence when that asks, with the questions
    just before it and a sentence after it that asks only how to answer ("Quelle cotisation maximise
    le résultat ? Et avec un cinquième court ? Détaille le raisonnement."); "" when it asks nothing."""
    text = tail.rstrip()[-TAIL_CHARS:]
    sentences = [s for s in _SENTENCE.split(text) if s.strip()][-ASKING_END:]
    end = len(sentences)
    while end and (style := _STYLE.match(sentences[end - 1].strip())) and style.end() >= len(sentences[end - 1].strip()):
        end -= 1
    if not end or not _asks(sentences[end - 1]):
        return ""
    start = end - 1
    while start and sentences[start - 1].rstrip().endswith(("?", "\uff1f")):
        start -= 1
    ask = text[text.rfind(sentences[start]) :]
    return ask if not more_words(ask, LONG_WORDS) else text[text.rfind(sentences[end - 1]) :]


def _strong(text: str) -> bool:
    """A question mark, an ask's opening word ("could you", "which") or a closing colon."""
    return bool(_STRONG_CUE.search(text) or _OPENS.search(text))


def _cued(text: str, *, colon: bool = True) -> bool:
    """Text with a cue of an ask: `_strong`, or a task word ("summarise"); a closing colon counts
    only with `colon` (a heading, "Tram depot shift notes:", names what follows but asks nothing)."""
    return bool(_STRONG_CUE.search(text) or _WEAK_CUE.search(text) or (colon and _OPENS.search(text)))


_BIDDING = re.compile(r"(?:^|[.!?;:,]\s*|\b(?:and|then|please|und|dann|bitte|et|puis|y|luego)\s+)\Z", re.IGNORECASE)
"""What comes before a task word that bids: a sentence's start, a comma, "and" ("Using the report,
quantify the levers"), not an article ("after the pay review")."""


def _bids(text: str) -> bool:
    """A task word where a request puts it (`_BIDDING`), or one in a script without spaces."""
    for cue in itertools.islice(_WEAK_CUE.finditer(text), 50):
        if not cue.group().isascii() or _BIDDING.search(text[max(0, cue.start() - 12) : cue.start()]):
            return True
    return False


def _asks(sentence: str) -> bool:
    """A sentence short enough to be an instruction, with a cue of one."""
    return not more_words(sentence, LONG_WORDS) and _cued(sentence)


_LABEL = re.compile(r"^\s*([^\W\d_][^:\n\uff1a]{0,24}?)\s*[:\uff1a](?!\d)")
SHOT_LINES = 12
"""A worked example has at most this many lines."""


def _labels(block: str) -> tuple[str, ...] | None:
    """The labels of a block whose every line opens with one ("Phrase : ...", "Corrigé :"), in
    order; None for any other block."""
    lines = block.splitlines()
    if not 2 <= len(lines) <= SHOT_LINES:
        return None
    found = [_LABEL.match(line) for line in lines]
    return tuple(m.group(1).lower() for m in found if m) if all(found) else None


def _shots(blocks: list[str]) -> set[int]:
    """Worked examples and the input after them (few-shot): blocks with the same labels in the same
    order ("Phrase : ... / Corrigé : ..." twice, the last with its answer left empty)."""
    labels = [_labels(b) for b in blocks] if len(blocks) > 2 else []
    seen: dict[tuple[str, ...], list[int]] = {}
    for i, named in enumerate(labels):
        if named:
            seen.setdefault(named, []).append(i)
    return {i for found in seen.values() if len(found) > 1 for i in found}


_GREETING = re.compile(
    r"^[ \t]*(?:(?:hi|hello|hey|dear|good (?:morning|afternoon|evening)|hallo|liebe[rs]?|sehr geehrte[rs]?|guten tag|"
    r"bonjour|bonsoir|cher|chère|salut|hola|estimad[oa]s?|querid[oa]s?|buen[oa]s (?:días|tardes))\b[^\n,]{0,40},"
    r"|(?:您好|你好|各位)[\uff0c,\uff1a:]|(?:お世話になっております|いつもお世話に)|(?:नमस्ते|प्रिय)\s)",
    re.IGNORECASE | re.MULTILINE,
)
"""A letter's salutation opening a line ("Hola, somos ...", "Dear Ms Romero,")."""


def _letters(rest: str) -> str:
    """`rest` with a blank line before each salutation that opens a line after the first: a letter
    pasted under its instruction is a block of its own."""
    if not (found := _GREETING.search(rest, 1)):
        return rest
    cuts = [m.start() for m in itertools.islice(_GREETING.finditer(rest, found.start()), 20)]
    parts = [rest[a:b] for a, b in zip([0, *cuts], [*cuts, len(rest)], strict=True)]
    return "\n\n".join(parts)


def _split_blocks(rest: str, code_blocks: list[str], read: str) -> Split:
    """Text without a template's sections apart, at blank lines and rules (`code_blocks`: the fenced
    code taken out of it; `read`: the turn as read, for its first sentence)."""
    if any(rule in rest for rule in ("---", "***", "===", "___")):
        rest = _RULE.sub("\n\n", rest)
    blocks = [b.strip() for b in _BLANK.split(_letters(rest)) if b.strip()]
    material: list[str] = list(code_blocks)
    if (shots := _shots(blocks)) and len(shots) < len(blocks):  # worked examples, then the input
        material += [b for i, b in enumerate(blocks) if i in shots]
        blocks = [b for i, b in enumerate(blocks) if i not in shots]
    data = False
    found = True
    opened: list[str] = []  # lines whose closing colon opened data taken out as material ("I've got:")
    tabular = [_is_data(b) for b in blocks]
    letters = [i > 0 and bool(_GREETING.match(b)) for i, b in enumerate(blocks)]  # a letter under its instruction
    heavy = [
        t or letter or (more_words(b, LONG_WORDS) and len(blocks) > 1)
        for t, letter, b in zip(tabular, letters, blocks, strict=True)
    ]
    if not any(heavy) and len(blocks) > 1 and more_words("\n".join(blocks), LONG_WORDS):
        cued = [_strong(b) for b in blocks]
        if not any(cued):  # none asks outright: the first or the last block, with a task word
            outer = (0, len(blocks) - 1)
            cued = [i in outer and more_words(b, 4) and _bids(b) for i, b in enumerate(blocks)]
        if any(cued):  # short blocks, some asking: the others are what they ask about
            heavy = [not c for c in cued]
    if any(heavy) or code_blocks:
        data = any(tabular)
        instruction: list[str] = []
        headings: list[str] = []
        for i in sorted({0, len(blocks) - 1} if blocks else set()):
            if tabular[i]:
                above, below, rest_of_block = _peel(blocks[i])
                if parts := [p for p in (above, below) if p.strip()]:
                    # "Tag this list" asks; "tenants' meeting 3 October" and "Selection A1:E9:" only
                    # name the data (and are the instruction only when nothing else asks); beside
                    # a line that asks, one that opens the data ("Need a module for our league:")
                    # asks with it, and a title ("ACCOUNT SUMMARY") does not
                    cued = [_cued(_untitled(p), colon=False) for p in parts]
                    asking = [p for p, c in zip(parts, cued, strict=True) if c or (any(cued) and _OPENS.search(p))]
                    instruction += asking
                    opened += [p.strip() for p in asking if p is above and _OPENS.search(p)]
                    headings += [p for p in parts if p not in asking]
                    blocks[i], tabular[i] = rest_of_block, _is_data(rest_of_block)
        ends = sorted(i for i in {0, len(blocks) - 1} if blocks and not tabular[i] and not letters[i])
        ends = [i for i in ends if not more_words(blocks[i], 2 * LONG_WORDS)]
        cued_ends = [i for i in ends if _strong(blocks[i])] or [
            i for i in ends if words(blocks[i]) > 4 and _WEAK_CUE.search(blocks[i])
        ]
        keep = set(cued_ends or [i for i in ends if not heavy[i]])
        instruction += [blocks[i] for i in sorted(keep)]
        material += [b for i, b in enumerate(blocks) if i not in keep]
        if instruction:  # a data block's heading is part of the data when something else asks
            material += headings
        else:
            instruction = headings
        if not instruction and blocks:  # every block is long: the first sentence, then the last
            found = False
            first, last = blocks[0], blocks[-1]
            head = _SENTENCE.split(first, maxsplit=1)[0]
            tail = _last_sentence(last) if len(blocks) > 1 else ""
            instruction = [s for s in (head, tail) if s and not more_words(s, LONG_WORDS)]
    else:
        instruction = blocks
    joined = "\n".join(instruction)
    if more_words(joined, LONG_WORDS):  # one long block: "do this: <material>" or a long quotation
        inline = _COLON_TAIL.match(joined)
        if inline and more_words(inline.group(2), LONG_WORDS // 2) and inline.group(1).strip() not in opened:
            joined, tail = inline.group(1), inline.group(2).rstrip()
            head = joined[:-1]
            # "Translate this: <text>" asks before its colon; "Our library is weighing ... Data:
            # <figures>. Build the case for and against." asks after its material
            if not (_strong(head) or _bids(head)) and (ask := _asking_end(tail)):
                joined, tail = f"{joined} {ask}", tail[: len(tail) - len(ask)].rstrip()
                if _conditions(tail):  # a puzzle's rules: the problem, not material ("Rape can't be next to beans.")
                    joined, tail = f"{inline.group(1)} {tail} {ask}", ""
            if tail:
                material.append(tail)
        else:
            quoted = _QUOTED.findall(joined)
            for q in quoted:
                material.append(q)
                joined = joined.replace(q, "…")
    elif (last := _QUOTED_LAST.search(joined)) and more_words(last.group(1), 5) and _strong(joined[: last.start()]):
        material.append(last.group(1))
        joined = joined[: last.start()]
    if not joined.strip():
        found = False
        joined = _SENTENCE.split(read.strip()[:TAIL_CHARS], maxsplit=1)[0][:600]
    return Split(joined.strip()[:2000], "\n\n".join(material), bool(code_blocks), data, found)


_SATISFY = re.compile(
    r"\b(?:satisf\w*|meets? (?:all|every|each|them|these|those)|fulfil\w*|impossible|all of (?:it|this|them|these)|"
    r"(?:every|each) (?:condition|constraint|rule|requirement)|all (?:the |these |those )?(?:conditions|constraints|rules)|"
    r"erfüll\w*|alle bedingungen|toutes les (?:contraintes|conditions|règles)|todas las (?:condiciones|reglas|restricciones)|"
    r"cumpl\w*)\b|(?:conditions|constraints|rules|bedingungen|contraintes|condiciones|restricciones)\s*:[ \t]*$"
    r"|满足|満た|条件[:\uff1a][ \t]*$|सभी शर्त",
    re.IGNORECASE | re.MULTILINE,
)
"""A request to find what meets its conditions ("Find a rota or tell me it's impossible", "a plan that
satisfies everything", "当番表を作りたいです。条件" and its list), not a question about rules ("what do the rules
say about dogs?")."""
_LISTED = re.compile(r"^\s*(?:[-*•・]\s*|\d+[.)]\s)")
_CONDITION = re.compile(
    r"\b(?:must|\w+n['\u2019]t|(?:ca|wo|do|does|did|is|are|was|were|has|have|had|should|could|would|must|need)nt|"
    r"cannot|can only|only|never|no(?:body| two| more than)?|not|at least|at most|exactly|"
    r"before|after|between|unless|except|same|differ\w*|max\w*|min\w*|apart|together|share|"
    r"nicht|kein\w*|muss|müssen|darf|dürfen|nur|mindestens|höchstens|nie|ne|pas|jamais|doi(?:t|vent)|au (?:moins|plus)|"
    r"seulement|avant|après|entre|aucun\w*|plus de|moins de|vor|nach|zwischen|niemand|mehr als|weniger als|"
    r"nunca|debe\w*|solo|al menos|como máximo|sin|antes|después|ningun\w*|nadie|más de|menos de|tiene(?:n)? que)\b"
    r"|不|必须|至少|最多|只|禁止|以内|以上|以下|まで|不可|同じ|最低|最大|नहीं|ज़रूरी|कम से कम|के बाद|से पहले",
    re.IGNORECASE,
)
CONDITION_SENTENCES = 3
"""A colon's tail of at least this many short sentences, most of them conditions, states a problem."""
_DIGIT = re.compile(r"\d")


def _conditions(tail: str) -> bool:
    """A tail of short sentences, most of them conditions without figures: a puzzle's rules ("each
    gets a different crop: wheat, barley, rape, beans, grass. Rape can't be next to beans. Grass
    must be at one end. ..."), not a report ("Returns fell from 81% to 77% after fines went.")."""
    if more_words(tail, 3 * LONG_WORDS):
        return False
    sentences = [x for x in _SENTENCE.split(tail) if x.strip()]
    if len(sentences) < CONDITION_SENTENCES or any(more_words(x, 25) for x in sentences):
        return False
    return 2 * sum(1 for x in sentences if _CONDITION.search(x) and not _DIGIT.search(x)) > len(sentences)


CONDITION_LINES = 40
"""At most this many listed conditions join the instruction."""


def _with_conditions(split: Split) -> Split:
    """A request to find what meets its conditions keeps them: three or more listed lines of the
    material that state a condition ("- Dot can't do dishes", "・連続した2週に同じ世帯が入らない")
    join the instruction (a rota or a seating plan is hard for its conditions, not for its ask)."""
    if not split.material or not _SATISFY.search(split.instruction):
        return split
    lines = itertools.islice(split.material[:TAIL_CHARS].splitlines(), 4 * CONDITION_LINES)
    conditions = [line.strip() for line in lines if _LISTED.match(line) and _CONDITION.search(line)]
    if len(conditions) < 3:
        return split
    joined = "\n".join([split.instruction, *conditions[:CONDITION_LINES]])
    return replace(split, instruction=joined[:2000])


_STYLE = re.compile(
    r"(?:^|(?<=[.!?;\n\u3002\uff01\uff1f\u0964]))[ \t]*(?:"
    r"(?:(?:let'?s|let us|please|now|first)\W+)?(?:think|reason|work|go)\s+(?:(?:it|this|things|the problem)\s+)?"
    r"(?:through\s+(?:it\s+)?)?(?:step[- ]by[- ]step|carefully|slowly|logically)"
    r"|(?:please\s+)?show\s+(?:me\s+)?(?:all\s+(?:of\s+)?)?your\s+(?:\w+\s+)?(?:reasoning|working|workings|work|steps?|calculations?|thinking)\b"
    r"|(?:please\s+)?show\s+(?:all|every|each)\s+(?:the\s+)?(?:working|workings|steps?)(?=\s*[.!?;,:\n]|\s+(?:and|then)\b|\s*$)"
    r"|(?:please\s+)?explain\s+your\s+(?:reasoning|thinking)|take a deep breath"
    r"|(?:please\s+)?(?:step[- ]by[- ]step|paso a paso|étape par étape|schritt für schritt)(?:\s+(?:please|pls|bitte|por favor))?"
    r"(?=\s*[:.!\n])"  # "step by step please: ..." on its own, not "Step by step, explain ..."
    r"|(?:denk|überleg)\w*(?:\s+sie)?\s+(?:schritt für schritt|sorgfältig|gründlich)"
    r"|zeig\w*(?:\s+sie)?\s+(?:deinen|deine|ihren|ihre|den|die)\s+(?:rechenweg|lösungsweg|gedankengang|überlegungen|schritte)"
    r"|(?:réfléchi|raisonne)\w*\s+(?:étape par étape|pas à pas|soigneusement)"
    r"|montre[zs]?\s+(?:ton|votre|tes|vos)\s+(?:raisonnement|calculs|étapes)"
    r"|détaille[rz]?\s+(?:le|ton|votre|les|tes|vos)\s+(?:raisonnement|calculs?|étapes)"
    r"|(?:piens|razon|pensem|razonem)\w*\s+(?:paso a paso|con cuidado|detenidamente)"
    r"|(?:muestra|detalla)\s+(?:tu|el|los|tus)\s+(?:razonamiento|procedimiento|pasos|cálculos?)"
    r"|(?:一歩ずつ|ステップバイステップで|段階的に|順を追って)考え|(?:请)?(?:一步一步|一步步|逐步)地?(?:思考|推理)"
    r"|(?:कदम दर कदम|चरण दर चरण|चरणबद्ध तरीके से)\s+सोच"
    r")[^.!?;:\n\u3002\uff01\uff1f\uff1a\u0964]*[.!?;:\u3002\uff01\uff1f\uff1a\u0964]?",
    re.IGNORECASE,
)
"""A sentence that asks only how to answer ("Think step by step before you answer.", "Show your
reasoning, then give the answer on its own line.", "一歩ずつ考えてから答えてください。"): prompt writers
add it to easy requests and hard ones alike, so it says nothing of how hard one is."""


def unstyled(instruction: str) -> str:
    """`instruction` without the sentences that ask only how to answer (`_STYLE`); itself when
    nothing else is left."""
    if len(instruction) > 2000 or not _STYLE.search(instruction):
        return instruction
    return _STYLE.sub("", instruction).strip() or instruction


_YOURS = re.compile(r"\s+(?:your|yourself|you)\b", re.IGNORECASE)


def sets_the_task(system: str) -> bool:
    """A short system prompt that sets one task for whatever the user sends ("Route each patron
    message to one queue", "You score app-store reviews: positive, negative or mixed", "Extract the
    time and place.", "Return JSON with merchant, date and total from the user's receipt."): work
    named on what arrives, or opening the prompt. The user's turn is then the material, whatever it
    asks of its reader."""
    head = system[:1000]
    if more_words(system, 2 * LONG_WORDS) or not (found := _WORKS_ON.search(head)):
        return False
    # "Extrais l'heure et le lieu du rendez-vous." opens with the work: what arrives is what it is done
    # to ("Summarise your reasoning at the end" is a house style)
    opens = found.start() == len(head) - len(head.lstrip()) and not _YOURS.match(head, found.end())
    return opens or bool(_WHAT_ARRIVES.search(head))


def closes(text: str) -> bool:
    """A last turn that only closes the exchange ("great, thank you!") or turns to something else
    ("thanks! unrelated, but ..."): it does not continue the task before it."""
    return bool(_ELSEWHERE.search(text[:300])) or thanks(text)


_THANKS_LAST = re.compile(
    r"(?:^|[.!,;:)\s])(?:thanks?|thank you|thx|ty|cheers|ta|danke|merci|gracias|谢谢|多谢|ありがとう\w*|धन्यवाद|शुक्रिया)"
    r"(?:\s+(?:a lot|so much|very much|heaps|loads|a million|mate|schön|vielmals|beaucoup|muchas))?[\s!.🙏👍😊]*$",
    re.IGNORECASE,
)
"""Thanks at the end of a turn ("it was the tyres, all four were at 24 psi! thanks a lot")."""


def thanks(text: str, *, replying: bool = True) -> bool:
    """A turn that only closes the exchange, opening with thanks ("great, thank you!", "cheers,
    that's spot on") or, in reply to an answer (`replying`), ending with them ("it was the tyres,
    all four were at 24 psi! thanks a lot"): it asks for nothing, here or after."""
    if more_words(text, FOLLOW_UP_WORDS) or _ELSEWHERE.search(text[:300]):
        return False
    ends = replying and _THANKS_LAST.search(text[-80:]) and not _STRONG_CUE.search(text)  # "why is it blue, thanks" asks
    if not (_CLOSING.match(text) or ends):
        return False
    return not _GOES_ON.search(text) and not _WEAK_CUE.search(text)


def task(payload: Mapping[str, Any]) -> Task:
    """The task of a chat or text completion request.

    A short last turn after earlier user turns is a follow-up: it carries the instruction of the
    turn before, or, when that turn was material only (a document pasted, then asked about), that
    turn's material. So does a longer one (up to `LONG_WORDS` words) that answers the assistant's
    question ("Sure - what formats appear?"), and neither does a turn that only closes the
    exchange (`closes`). A last turn that is material only, under a short system prompt, has its
    instruction there ("Summarise what the user sends. Reply in JSON."), and so does any last turn
    under a system prompt that sets the task for what arrives (`sets_the_task`)."""
    messages = payload.get("messages")
    system = ""
    asked_back = False
    if not isinstance(messages, list):
        prompt = payload.get("prompt")
        turns = [prompt if isinstance(prompt, str) else ""]
    else:
        said = [m for m in messages if isinstance(m, Mapping)]
        turns = [content_text(m.get("content")) for m in said if m.get("role") == "user"] or [""]
        system = "\n".join(content_text(m.get("content")) for m in said if m.get("role") in ("system", "developer"))
        users = [i for i, m in enumerate(said) if m.get("role") == "user"]
        if users and users[-1] > 0 and said[users[-1] - 1].get("role") == "assistant":
            reply = content_text(said[users[-1] - 1].get("content")).rstrip()[-200:]
            asked_back = reply.endswith(("?", "\uff1f"))
    last = split_turn(turns[-1])
    instruction, material, code, data = last.instruction, last.material, last.code, last.data
    size = len(turns[-1]) - len(instruction) if material else 0
    from_system = bool(system.strip()) and sets_the_task(system[:SCAN_CHARS])
    if from_system or (not last.found and system.strip() and not more_words(system[:SCAN_CHARS], 2 * LONG_WORDS)):
        instruction, material, size = system.strip(), turns[-1][:SCAN_CHARS], len(turns[-1])
    earlier = ""
    short = words(instruction) <= FOLLOW_UP_WORDS
    replies = asked_back and not short and not more_words(instruction, LONG_WORDS)
    if len(turns) > 1 and (short or replies) and not from_system and not closes(turns[-1]):
        before = split_turn(turns[-2])
        asks = _STRONG_CUE.search(before.instruction) or (
            words(before.instruction) <= LONG_WORDS and _WEAK_CUE.search(before.instruction)
        )
        if before.found and asks:
            earlier = before.instruction
        elif short or replies:  # a document pasted, then asked about, or the answer to a question on it
            material = f"{turns[-2][:SCAN_CHARS]}\n\n{material}".strip()
            size += len(turns[-2])
            code, data = code or before.code, data or before.data
    return Task(unstyled(instruction), material, max(0, size), code, data, unstyled(earlier))


def routed_text(payload: Mapping[str, Any], found: Task | None = None) -> str | None:
    """What the router embeds: the instruction, after the one it continues (None when empty).
    `found` is the request's `task`, when the caller has it already."""
    found = found or task(payload)
    text = f"{found.earlier}\n{found.instruction}" if found.earlier else found.instruction
    return text.strip() or None
