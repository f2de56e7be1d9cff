"""What the complexity classifier reads from a request besides its embedding. Pure and cheap.

The task apart from the material (`gateway.routing.task`): the cues of the work asked for (extract,
classify, summarise, translate, explain, write, code, debug, prove, design, reason, an expert's
judgement on rights, health or tax) are read in the instruction only, the material counts by its
size and kind (prose, data, code), and a short follow-up carries the cues of the turn it continues.
The system prompt's words do not count: it is an app's standing brief (a persona, a domain, a
house style: "you are a vet clinic's assistant, never give a diagnosis", "explain step by step"),
the same for every request the app sends, so it says nothing of how hard one request is; only its
length does. Where the user's turn is material only, or the system prompt sets one task for what
users send, the task takes the system prompt as the instruction (`gateway.routing.task.task`), and
its cues count there.

Cue words in English, German, French, Spanish, Portuguese and Italian (whole words) and in
Chinese, Japanese and Hindi (substrings, since those scripts have no word boundaries that `\\b`
sees). MiniLM reads English best, so in other languages these cues do more of the work.
Each feature is a float; `FEATURE_NAMES` says which is which.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from gateway.routing.task import Task, task, thanks, words
from gateway.text import conversation, text_tokens

FEATURE_NAMES = (
    "log_words_instruction",
    "log_tokens_material",
    "log_tokens_all",
    "material_code",
    "material_data",
    "code_in_instruction",
    "math",
    "questions",
    "constraints",
    "multi_step",
    "reasoning",
    "design",
    "proof",
    "expert",
    "compose",
    "lookup",
    "extract",
    "classify",
    "summarise",
    "translate",
    "explain",
    "code_task",
    "debug",
    "answer_from_material",
    "format",
    "light_over_material",
    "hard",
    "short_instruction",
    "earlier_hard",
    "follow_up",
    "non_ascii",
    "turns",
    "system_len",
    "tools",
    "tool_result",
    "json_mode",
    "instruction_lines",
    "thanks",
)

CUE_CHARS = 4000
"""The cues are read in this much of the instruction (and of the turn a follow-up continues)."""


class _Cues:
    """A family of cue words: whole words from `latin` (a lower-case regex alternation), matched in
    the lower-cased text (two and a half times faster than a case-blind match), and substrings from
    `other` (scripts without word boundaries, symbols), looked for only in text that is not all
    ASCII unless they can match ASCII. The two never overlap, so their counts add up."""

    def __init__(self, latin: str, other: str = "") -> None:
        if re.search(r"(?<!\\)[A-Z]", latin):
            raise ValueError(f"cue words are written in lower case: {latin[:60]!r}")
        self.latin = re.compile(rf"\b(?:{_by_first_letter(latin)})\b")
        self.other = re.compile(other, re.IGNORECASE) if other else None
        self.matches_ascii = any(ch.isascii() and ch not in "|()" for ch in other)
        """`other` may match in ASCII text too (symbols such as = and ^)."""

    def count(self, text: str, lowered: str, ascii_only: bool) -> int:
        found = len(self.latin.findall(lowered))
        if self.other is not None and (self.matches_ascii or not ascii_only):
            found += len(self.other.findall(text))
        return found


def _alternatives(alternation: str) -> list[str]:
    """The top-level alternatives of a regex alternation."""
    found, depth, start, escaped, in_class = [], 0, 0, False, False
    for i, ch in enumerate(alternation):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            found.append(alternation[start:i])
            start = i + 1
    return [*found, alternation[start:]]


def _by_first_letter(alternation: str) -> str:
    """The same alternation, its alternatives grouped by their first letter: the engine then tries
    one group at each position instead of every alternative (matches are unchanged, since two
    alternatives that start with different letters never match at the same place, and the order
    within a letter is kept). About ten times faster on a long instruction."""
    groups: dict[str, list[str]] = {}
    rest: list[str] = []
    for alternative in _alternatives(alternation):
        first = alternative[:1].lower()
        if first.isalpha() and first.isascii() and alternative[1:2] not in ("?", "*", "+", "{"):
            groups.setdefault(first, []).append(alternative[1:])
        else:
            rest.append(alternative)
    parts = [f"{letter}(?:{'|'.join(tails)})" for letter, tails in groups.items()]
    return "|".join(parts + rest)


_CODE_TOKEN = re.compile(
    r"\b(def|class|return|import|function|const|let|var|async|await|fn|impl|struct|public|private|void|#include|SELECT|FROM|WHERE)\b"
    r"|[{};]|==|=>|->|::|\w+\(\)"
)
_MATH = _Cues(
    r"mod|integral|derivative|equation|eigen\w*|matrix|probability|recurrence|induction|irrational|prime|primes|modular|"
    r"inequality|converg\w*|lim|expected value|variance|optimi[sz]e|maximi[sz]e|minimi[sz]e|combinatori\w*|"
    r"permutations?|irracional|irrationnel\w*|irrazional\w*|primzahl\w*|primos?|premiers?|probabilidad|probabilité|"
    r"wahrscheinlichkeit|ecuaci[oó]n|équation|gleichung|integral\w*|ableitung|dérivée|derivada",
    r"[=^√∑∫≤≥≠±∞π]|概率|方程|证明|素数|积分|導関数|確率|方程式|素数|積分|प्रायिकता|समीकरण|अभाज्य|अपरिमेय",
)
_CONSTRAINT = _Cues(
    r"must|exactly|at least|at most|no more than|without|only|ensure|guarantee|constraint\w*|requirement\w*|"
    r"while|handle|edge cases?|trade-?offs?|under \d+|within|budget|deadline|muss|müssen|sans|doit|debe|sin|"
    r"mindestens|höchstens|au moins|al menos",
    r"必须|至少|不超过|要求|条件|必ず|以内|以下の条件|ज़रूर|कम से कम",
)
_MULTI_STEP = _Cues(
    r"step[- ]by[- ]step|then|finally|plan|strategy|walk through|in depth|detailed|rigorous\w*|systematic\w*|"
    r"end[- ]to[- ]end|each|every|all|paso a paso|étape par étape|schritt für schritt|passo a passo|"
    r"dann|puis|luego|después|jede[rsn]?|chaque|cada",
    r"步骤|然后|每一步|详细|ステップ|詳しく|それぞれ|चरण|विस्तार",
)
_REASONING = _Cues(
    r"derive|analy[sz]e|analysis|evaluate|justify|formali[sz]e|critique|critically|reason\w*|optimi[sz]e|"
    r"assess|estimate|quantify|investigat\w*|root[- ]cause|diagnos\w*|differential diagnos\w*|implications?|argue|"
    r"trade-?offs?|sensitivity|model of|analiz\w*|analys\w*|analysier\w*|justifi\w*|begründ\w*|optimiz\w*|"
    r"optimis\w*|bewert\w*|évalu\w*|evalú\w*|quantifi\w*",
    r"分析|论证|推导|权衡|評価|分析し|論じ|検討|विश्लेषण|तर्क",
)
_DESIGN = _Cues(
    r"design|architect\w*|distributed|scal\w+|concurren\w+|fault[- ]tolerant|consisten\w+|lock-free|thread-safe|"
    r"replication|replicated|replicas?|sharding|partition\w*|throughput|latency|failover|migrat\w+|microservices?|"
    r"diseñ\w*|concev\w*|conçoi\w*|entwirf|entwerfen|entwurf|projet[ae]\w*|progett\w*|arquitectura|architektur|"
    r"distribuid\w*|distribué\w*|verteilt\w*",
    r"设计|架构|分布式|高并发|一致性|設計|アーキテクチャ|分散|整合性|डिज़ाइन|डिजाइन|प्रणाली",
)
_PROOF = _Cues(
    r"prove|proof|disprove|show that|demonstrate that|theorem|lemma|derive|demuestr\w*|demostr\w*|démontr\w*|"
    r"prouve[rz]?|beweis\w*|dimostr\w*|prove que|mostre que|muestra que|montrez que|zeigen sie",
    r"证明|推导|証明|導出|सिद्ध",
)
_EXPERT = _Cues(
    # the questions a lawyer, a doctor or an accountant is paid for: rights, liability, risk to a patient, tax
    r"liab\w*|negligen\w*|lawsuit|sue|legally|lawful|unlawful|statute\w*|jurisdiction\w*|compensation|"
    r"enforceab\w*|non-compete|breach|defam\w*|libel\w*|slander\w*|"
    r"my rights|tenancy law|employment law|gdpr|indemn\w*|taxed|taxable|tax return|"
    r"deductible|benefit in kind|taxable benefit|marginal (?:tax )?rate|"
    r"interactions?|contraindicat\w*|dosage|diagnos\w*|symptoms?|prognosis|how urgent|"
    r"haft\w*|rechtlich\w*|ansprüche?|verleumd\w*|üble nachrede|"
    r"schadensersatz|kündigungsschutz\w*|unwirksam\w*|rechtswirksam\w*|steuerlich\w*|"
    r"gerichtsstand\w*|welches recht|anwendbare[sn]? recht|welche vorschriften gelten|finanzamt\w*|"
    r"grenzsteuersatz\w*|geldwerte[nr]? vorteil\w*|"
    r"applicable law|governing law|which (?:laws?|regulations?) appl(?:y|ies)|"
    r"responsab\w*|recours|préjudice|diffam\w*|droit applicable|juridiction\w*|quelle réglementation|réglementation applicable|"
    r"légal\w*|indemnité\w*|fiscal\w*|reclamar|indemnización|legalmente|despido|ley aplicable|jurisdicci\w*|"
    r"qué normativa|normativa aplicable|avantage en nature|retribución en especie|hacienda|difamaci\w*|calumnia\w*",
    r"责任|赔偿|违约|合法|诊断|剂量|税务|适用法律|管辖|诽谤|名誉权|名誉毀損|責任|賠償|違法|診断|用量|税金|準拠法|管轄|ज़िम्मेदारी|मुआवज़ा|कानूनी|निदान",
)
_GENRES = (
    r"poem|story|haiku|limerick|sonnet|essay|email|e-mail|letter|message|caption|bio|description|speech|"
    r"poème|poema|gedicht|carta|lettre|brief|correo|mensaje|nachricht"
)
_COMPOSE = _Cues(
    # A genre counts when a new one is asked for ("a short poem", "an email to ..."), not when the
    # request is about one it was given ("is this message angry", "which category this email is").
    r"write|draft|compose|rewrite|create|generate|outline|escrib\w*|redact\w*|écri\w*|rédige\w*|"
    r"schreib\w*(?![^.!?:\n]{0,80}\b(?:raus|heraus)\s*(?:[.!?\n]|$))|"  # "Schreib mir alle Schläge als Liste raus" extracts
    r"verfass\w*|escrev\w*|scriv\w*|"
    rf"(?:a|an|un|une|una|ein|eine|einen|einem)\s+(?:[\w-]+\s+){{0,2}}(?:{_GENRES})",
    r"写一|写封|写首|写篇|写个|作文|書いて|作成|लिखिए|लिखें",
)
_LOOKUP = re.compile(
    r"^\W*(what|who|whom|when|where|which|how many|how much|how far|how long|how tall|is|are|was|were|does|did|name|"
    r"spell|define|qu[ei]\w*|quién|cuál\w*|cuánt\w*|dónde|cuándo|cómo se dice|wer|wie viele|wie lange|wann|wo|"
    r"welche\w*|quel\w*|combien|où|quand)\b|(什么|多少|几|哪|誰|何|いくら|いつ|どこ|क्या|कितन|कौन|कब|कहाँ)",
    re.IGNORECASE,
)
_EXTRACT = _Cues(
    r"extract|pull out|pull (?:the|all|every)|"
    r"list (?:every|all|the)|find (?:every|all|the)|count|how many|which \w+ (?:had|has|was|is)|"
    r"what (?:time|date|was the|is the)|names? of|only the|just the|one word|extrahier\w*|extrai[st]\w*|extrae\w*|"
    r"liste(?! (?:de diffusion|d'attente|de distribution|de espera|de difusión))|"
    r"nur die|seulement|solo la|solo el|combien|cuántos?|wie viele|"
    r"(?:he)?raus(?:such|zieh|schreib)\w*|"
    r"(?:such|zieh|hol|schreib|filter)\w*(?=[^.!?:\n]{0,80}\b(?:raus|heraus)\s*(?:[.!?\n]|$))",
    r"提取|找出|列出|多少|抽出|抜き出|だけを?(?:教え|答え|書き出|知りたい)|いくら|何人|निकाल|कितन|केवल संख्या",
)
_CLASSIFY = _Cues(
    r"classify|classification|categor\w*|kategori\w*|catégori\w*|label|tag (?:each|every|them|these|all)|sentiment|tone|"
    r"positive|negative|neutral|spam|"
    r"which language|what language|topic of|choose one|one of|klassifizier\w*|clasific\w*|classe[rz]|positi[fv]\w*|négati\w*|"
    r"negati\w*|stimmung|tono",
    r"分类|情感|正面|负面|分類|感情|肯定的|否定的|に分けて|に仕分け|分成|归为|वर्गीकृत|भावना|सकारात्मक|नकारात्मक",
)
_SUMMARISE = _Cues(
    r"summar\w*|sum up|tl;?dr|gist|recap|key points|main points|in \w+ bullet|bullet points|condense|"
    r"zusammenfass\w*|fasse|résum\w*|resum\w*|riassum\w*|sintetiz\w*",
    r"总结|概括|摘要|要約|まとめ|सारांश|सार ",
)
_TRANSLATE = _Cues(
    r"translat\w*|in (?:english|german|french|spanish|italian|japanese|chinese|hindi|portuguese)|"
    r"into (?:english|german|french|spanish|italian|japanese|chinese|hindi|portuguese)|how do you say|"
    r"übersetz\w*|tradu\w*|cómo se dice|comment dit-on",
    r"翻译|翻訳|英語で|英文|अनुवाद",
)
_EXPLAIN = _Cues(
    # "the time difference between Lisbon and Madrid" is a figure to look up, not two ideas to set apart
    r"explain|what is the difference|(?<!time )(?<!age )(?<!price )(?<!cost )(?<!height )(?<!weight )(?<!size )"
    r"(?<!temperature )(?<!speed )(?<!distance )difference between|how does|how do|why (?:is|do|does|are)|what's the difference|"
    r"pros and cons|compare|versus|vs|describe|erkläre?\w*|explique\w*|explica\w*|spiega\w*|unterschied|"
    r"différence|diferencia",
    r"解释|说明|区别|説明|違い|とは|समझा|अंतर",
)
_CODE_TASK = _Cues(
    r"function|script|program|implement\w*|class|method|regex|regular expression|sql|query|python|javascript|"
    r"typescript|java|rust|golang|c\+\+|bash|api|algorithm|code|parser|interpreter|compiler|funci[oó]n|fonction|"
    r"funktion|programm\w*|implementier\w*|implément\w*|implement[ae]\w*",
    r"函数|代码|程序|算法|関数|コード|プログラム|アルゴリズム|फ़ंक्शन|प्रोग्राम|कोड",
)
_DEBUG = _Cues(
    r"bug|bugs|error|exception|traceback|crash\w*|broken|"
    r"fix(?!\s+(?:(?:the|my|any|all|up|these|those)\s+)?(?:spelling|grammar|typos?|punctuation|capitali[sz]ation|wording)\b)|"
    r"doesn't work|does not work|fails?|failing|leak\w*|"
    r"wrong|race|deadlock|oomkilled|unboundlocalerror|typeerror|fehler|erreur|error",
    r"错误|报错|修复|バグ|エラー|修正|त्रुटि|गलती",
)
_FORMAT = _Cues(
    r"markdown|json|csv|table|bullet(?:ed)? list|sort|alphabeti[sz]e|uppercase|lowercase|capitali[sz]e|reverse|"
    r"reformat|convert|one per line|own line|tabelle|tableau|tabla|sortier\w*|trie[rz]?|ordena\w*|"
    r"spelling|typos?|proofread\w*|rechtschreib\w*|tippfehler|orthograph\w*|fautes? d'orthographe|ortograf\w*|"
    r"(?:fix|correct|check)\w* (?:the |my |this |its )?grammar",
    r"表格|排序|格式|表に|並べ|तालिका|क्रम",
)
_QUESTION = re.compile(r"[?\uff1f]")


def _count(pattern: re.Pattern[str], text: str) -> float:
    return math.log1p(len(pattern.findall(text)))


_FAMILIES = {
    "math": _MATH,
    "constraints": _CONSTRAINT,
    "multi_step": _MULTI_STEP,
    "reasoning": _REASONING,
    "design": _DESIGN,
    "proof": _PROOF,
    "expert": _EXPERT,
    "compose": _COMPOSE,
    "extract": _EXTRACT,
    "classify": _CLASSIFY,
    "summarise": _SUMMARISE,
    "translate": _TRANSLATE,
    "explain": _EXPLAIN,
    "code_task": _CODE_TASK,
    "debug": _DEBUG,
    "format": _FORMAT,
}
_HARD = ("proof", "design", "reasoning", "code_task", "math", "expert")


def _counts(text: str, families: tuple[str, ...] | None = None) -> dict[str, int]:
    """How many cues of each family (of `families` only, when given) `text` holds."""
    ascii_only, lowered = text.isascii(), text.lower()
    return {name: cue.count(text, lowered, ascii_only) for name, cue in _FAMILIES.items() if families is None or name in families}


def features(payload: Mapping[str, Any], found: Task | None = None) -> list[float]:
    found = found or task(payload)
    talk = conversation(payload)
    instruction = found.instruction[:CUE_CHARS]
    count = _counts(instruction)
    earlier = sum(_counts(found.earlier[:CUE_CHARS], _HARD).values()) if found.earlier else 0
    response_format = payload.get("response_format")
    json_mode = isinstance(response_format, Mapping) and response_format.get("type") in ("json_schema", "json_object")
    messages = payload.get("messages")
    final = messages[-1] if isinstance(messages, list) and messages else None
    tool_result = isinstance(final, Mapping) and final.get("role") == "tool"
    lookup = bool(_LOOKUP.search(instruction)) or bool(_QUESTION.search(instruction[-200:]))
    light = count["extract"] + count["classify"] + count["format"]
    hard = sum(count[name] for name in _HARD)
    material = found.material_chars > 200

    def log(name: str) -> float:
        return math.log1p(count[name])

    return [
        math.log1p(words(instruction)),
        math.log1p(found.material_chars / 4),
        math.log1p(text_tokens(talk.everything) + text_tokens(talk.system)),
        float(found.code),
        float(found.data),
        _count(_CODE_TOKEN, instruction),
        log("math"),
        float(min(instruction.count("?") + instruction.count("\uff1f"), 5)),
        log("constraints"),
        log("multi_step"),
        log("reasoning"),
        log("design"),
        log("proof"),
        log("expert"),
        log("compose"),
        float(lookup),
        log("extract"),
        log("classify"),
        log("summarise"),
        log("translate"),
        log("explain"),
        log("code_task"),
        log("debug"),
        float(lookup and material),
        log("format"),
        float(light > 0 and material and hard == 0),
        math.log1p(hard),
        float(words(instruction) <= 12),
        math.log1p(earlier),
        float(bool(found.earlier)),
        (len(instruction.encode()) - len(instruction)) / max(1, len(instruction)),  # bytes beyond one per character
        math.log1p(talk.turns),
        math.log1p(text_tokens(talk.system)),
        math.log1p(len(payload.get("tools") or [])),
        float(tool_result),
        float(json_mode),
        math.log1p(instruction.count("\n")),
        float(thanks(talk.last, replying=talk.turns > 1)),
    ]
