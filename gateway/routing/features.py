"""What the complexity classifier reads from a request besides its embedding. Pure and cheap.

The word lists carry Spanish, French, German, Portuguese and Italian stems beside the English ones:
MiniLM reads English, so in other languages these cues do more of the work.

The conversation (read by `gateway.text`), not only its last turn: depth, the length of what came before, the system prompt,
tools and response_format count too. Each feature is a float; `FEATURE_NAMES` says which is which.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from gateway.text import conversation, text_tokens

FEATURE_NAMES = (
    "log_tokens_last",
    "log_tokens_all",
    "code_blocks",
    "code_tokens",
    "math",
    "questions",
    "constraints",
    "multi_step",
    "reasoning_verbs",
    "design_words",
    "proof",
    "compose",
    "lookup",
    "non_ascii",
    "turns",
    "system_len",
    "tools",
    "json_schema",
    "lines",
)


def _words(alternatives: str) -> re.Pattern[str]:
    """Any of `alternatives` (a regex alternation) as whole words, in any case."""
    return re.compile(rf"\b({alternatives})\b", re.IGNORECASE)


_CODE_FENCE = re.compile(r"```")
_CODE_TOKEN = re.compile(
    r"\b(def|class|return|import|function|const|let|var|async|await|fn|impl|struct|public|private|void|#include|SELECT|FROM|WHERE)\b"
    r"|[{};]|==|=>|->|::|\w+\(\)"
)
_MATH = re.compile(
    r"[=^√∑∫≤≥≠±∞π]|\b(mod|prove|proof|theorem|lemma|derive|integral|derivative|equation|eigen\w*|matrix|"
    r"probability|recurrence|induction|irrational|prime|modular|inequality|converg\w*|lim|eigenvalues?|"
    r"demuestr\w*|démontr\w*|beweis\w*|dimostr\w*|irracional|irrationnel\w*|irrazional\w*|primzahl\w*|"
    r"primos?|premiers?|probabilidad|probabilité|wahrscheinlichkeit|ecuaci[oó]n|équation|gleichung)\b",
    re.IGNORECASE,
)
_CONSTRAINT = _words(
    r"must|exactly|at least|at most|no more than|without|only|ensure|guarantee|constraint\w*|requirement\w*|"
    r"while|handle|edge cases?|trade-?offs?",
)
_MULTI_STEP = _words(
    r"step[- ]by[- ]step|first|then|finally|plan|strategy|walk through|in depth|detailed|rigorous\w*|"
    r"systematic\w*|end[- ]to[- ]end|each|all|paso a paso|étape par étape|schritt für schritt|passo a passo",
)
_REASONING = _words(
    r"prove|derive|analy[sz]e|evaluate|justify|formali[sz]e|critique|reason\w*|why|optimi[sz]e|debug|"
    r"compare|assess|estimate|analiz\w*|analys\w*|justifi\w*|begründ\w*|optimiz\w*|optimis\w*|vergleich\w*|"
    r"compar[ae]\w*|pourquoi|warum|por qué|por que|perché",
)
_DESIGN = _words(
    r"design|architect\w*|implement|distributed|scal\w+|concurren\w+|fault[- ]tolerant|consisten\w+|"
    r"algorithm\w*|complexity|protocol|system|lock-free|thread-safe|migrat\w+|"
    r"diseñ\w*|concev\w*|conçoi\w*|entwirf|entwerfen|entwurf|projet[ae]\w*|progett\w*|arquitectura|architektur|"
    r"algoritm\w*|algorithme\w*|algorithmus|distribuid\w*|distribué\w*|verteilt\w*|implement[ae]\w*|"
    r"implément\w*|implementier\w*|complejidad|complexité|komplexität|complessità|sistema|système",
)
_PROOF = _words(
    r"prove|proof|disprove|show that|demonstrate that|justify|demuestr\w*|demostr\w*|démontr\w*|prouve[rz]?|"
    r"beweis\w*|dimostr\w*|prove que|mostre que|muestra que|montrez que|zeigen sie",
)
_COMPOSE = _words(
    r"write|draft|compose|rewrite|create|generate|outline|poem|story|haiku|sonnet|essay|email|letter|caption|"
    r"escrib\w*|redact\w*|écri\w*|rédige\w*|schreib\w*|verfass\w*|escrev\w*|scriv\w*",
)
_LOOKUP = re.compile(
    r"^\W*(what|who|whom|when|where|which|how many|how much|is|are|was|were|does|did|name|translate|convert|"
    r"spell|define|round|sort|list|qu[ei]\w*|quién|cuál\w*|cuánt\w*|dónde|cuándo|wer|wie viele|wann|wo|"
    r"welche\w*|quel\w*|combien|où|quand)\b",
    re.IGNORECASE,
)

_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+")


def features(payload: Mapping[str, Any]) -> list[float]:
    talk = conversation(payload)
    last, everything = talk.last, talk.everything
    response_format = payload.get("response_format")
    schema = isinstance(response_format, Mapping) and response_format.get("type") in ("json_schema", "json_object")
    return [
        math.log1p(text_tokens(last)),
        math.log1p(text_tokens(everything)),
        len(_CODE_FENCE.findall(everything)) / 2,
        math.log1p(len(_CODE_TOKEN.findall(last))),
        math.log1p(len(_MATH.findall(last))),
        float(last.count("?")),
        math.log1p(len(_CONSTRAINT.findall(last))),
        math.log1p(len(_MULTI_STEP.findall(last))),
        math.log1p(len(_REASONING.findall(last))),
        math.log1p(len(_DESIGN.findall(last))),
        math.log1p(len(_PROOF.findall(last))),
        math.log1p(len(_COMPOSE.findall(last))),
        float(bool(_LOOKUP.search(_SENTENCE_END.split(last.strip())[-1]))),
        (len(last.encode()) - len(last)) / max(1, len(last)),  # bytes beyond one per character: not ASCII
        math.log1p(talk.turns),
        math.log1p(text_tokens(talk.system)),
        math.log1p(len(payload.get("tools") or [])),
        float(schema),
        math.log1p(last.count("\n")),
    ]
