"""`gateway router-data`: labelled requests for the router, generated from hand-written task seeds.

The seeds (`evals/router-seeds/*.yaml`, one file per language) hold what a person has to write:
instruction templates by tier and kind of task (labelled by `evals/router-rubric.md`: `tier` is
rubric A, a group's `b` the second reader's tier where it differs), paragraphs, transcript lines,
reviews, log lines and code to build material from, wrappers and system prompts, and the turns of
conversations. Code makes the rest, deterministically from a seed:

- **material tasks**: an instruction over generated material (a document of 1 to 12 paragraphs, a
  table, reviews, a log, a transcript, code), before it, after it, on the same line after a colon,
  in a second turn after the material was pasted in the first, or with the task in the system
  prompt (JSON mode or not) over the material or over one short message a user sent ("can I change
  my delivery address?"); the tier is the instruction's, whatever the material's size;
- **standalone tasks**: a template with its `{a|b|c}` alternatives picked, wrapped in a greeting or
  not, with the asker's situation before or after it (20%) or not, as a prompt, a chat message,
  under a system prompt, in JSON mode (6%), with tools for tool tasks;
- **conversations**: a task, the assistant's clarifying question or first part, and a short
  follow-up ("ok go ahead") that keeps the task's tier; or a thank-you / an unrelated small
  question after it, which is small.

Every row is `split: train` with `source: generated-<lang>`, `kind`, `shape` and `lang`.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.routing.task import sets_the_task

SEEDS = Path(__file__).resolve().parents[2] / "evals" / "router-seeds"
TIERS = ("small", "medium", "large")
GENERATED = "generated-"
"""The start of a generated row's `source` (then its language)."""
PER_LANGUAGE = {"en": 2600, "de": 220, "fr": 220, "es": 220, "zh": 200, "ja": 200, "hi": 200}
"""Rows per language (languages without an entry: 200)."""
BACKSTORY = 0.2
"""Share of wrapped requests that also carry the asker's situation ("It's for my homework.",
"My son asked me this at dinner"): it says why one asks, not how hard the request is."""
CHAT = 0.15
"""Share of wrapped requests written as in a chat window: lower case, most without the closing
punctuation. How a request is typed says nothing of how hard it is."""

PIPELINE = 0.12
"""Share of requests written as a developer's pipeline builds them (`### Instruction` and `### Input`
sections, `<document>` tags, "Q: ... A:"): the template says nothing of how hard the task is."""
PIPELINES_OVER_MATERIAL = (
    "### Instruction\n{i}\n\n### Input\n{m}\n\n### Response\n",
    "<document>\n{m}\n</document>\n\n{i}",
    "<context>\n{m}\n</context>\n<question>{i}</question>",
    "{i}\n---\n{m}\n---",
    '{i}\n\nText: """\n{m}\n"""\n\nAnswer:',
    "<input>{m}</input>\n<task>{i}</task>",
)

MATERIAL_FOR = {
    "extract": ("prose", "data", "transcript"),
    "classify": ("prose", "transcript", "reviews"),
    "sentiment": ("prose", "reviews", "transcript"),
    "format": ("data",),
    "summarise": ("prose", "transcript"),
    "context_qa": ("prose", "transcript", "data"),
    "translate": ("prose",),
    "writing": ("prose", "transcript"),
    "code_lookup": ("code",),
    "code_read": ("code",),
    "debug": ("code",),
    "hard_debug": ("code",),
    "context_math": ("data",),
    "analysis": ("prose", "data", "transcript"),
}
"""Which material each kind of material task works on."""
JSON_KINDS = frozenset({"extract", "classify", "sentiment", "summarise", "format"})
"""Material tasks that may come in JSON mode."""
JSON_ANYWHERE = 0.06
"""Share of standalone requests in JSON mode: an app that wants JSON back asks it of easy and hard
requests alike, so JSON mode says nothing of how hard one is."""
SYSTEM_KINDS = JSON_KINDS | {"translate"}
"""Material tasks an app may set in its system prompt for whatever its users send."""
ONE_MESSAGE = 0.5
"""Share of those whose user turn is one short message ("my password reset email never arrives,
help??"), not a document: a question in it is asked of the app's reader, not of the model."""
TOOLS = [
    {"type": "function", "function": {"name": name, "description": desc, "parameters": {"type": "object", "properties": props}}}
    for name, desc, props in (
        ("get_weather", "Current weather for a place", {"place": {"type": "string"}}),
        ("get_quote", "Latest price of a ticker", {"ticker": {"type": "string"}}),
        ("add_item", "Add an item to a list", {"list": {"type": "string"}, "item": {"type": "string"}}),
        ("find_slots", "Free calendar slots of some people", {"people": {"type": "array", "items": {"type": "string"}}}),
        ("create_event", "Create a calendar event", {"title": {"type": "string"}, "start": {"type": "string"}}),
        ("set_timer", "Start a timer", {"minutes": {"type": "integer"}}),
    )
]
_ALTERNATIVES = re.compile(r"\{([^{}]*\|[^{}]*)\}")
_SINGLE = re.compile(r"\{([^{}|]*)\}")
"""Braces around one alternative (or an unfilled slot): the text inside."""
_SLOTS = {
    "people": ["customers", "staff", "parents", "new members", "residents", "the night team", "our partners"],
    "things": ["items", "people", "dates", "entries", "products"],
    "thing": ["value", "figure", "amount", "score"],
    "language": ["French", "German", "Spanish", "Italian", "Portuguese", "Japanese"],
}


@dataclass(frozen=True)
class Group:
    """Instruction templates of one kind and tier; `b` is rubric B's tier where it differs."""

    kind: str
    tier: str
    prompts: tuple[str, ...]
    b: str | None = None


@dataclass
class Language:
    lang: str
    raw: dict[str, Any]
    material_groups: list[Group] = field(default_factory=list)
    standalone_groups: list[Group] = field(default_factory=list)

    def __post_init__(self) -> None:
        for section, into in (("over_material", self.material_groups), ("standalone", self.standalone_groups)):
            for tier, kinds in (self.raw.get(section) or {}).items():
                if tier not in TIERS:
                    raise ValueError(f"{self.lang}: {section} has an unknown tier {tier!r}")
                for kind, spec in kinds.items():
                    if isinstance(spec, Mapping):
                        into.append(Group(kind, tier, tuple(spec["prompts"]), spec.get("b")))
                    else:
                        into.append(Group(kind, tier, tuple(spec)))

    def list(self, *path: str) -> list[Any]:
        node: Any = self.raw
        for key in path:
            node = (node or {}).get(key)
        return list(node or [])


def load(seeds: Path = SEEDS) -> list[Language]:
    return [Language(str(raw["lang"]), raw) for raw in (yaml.safe_load(p.read_text()) for p in sorted(seeds.glob("*.yaml")))]


def fill(template: str, rng: random.Random, slots: Mapping[str, str] | None = None) -> str:
    """`template` with each `{a|b|c}` replaced by one alternative and each named slot filled."""
    text = _ALTERNATIVES.sub(lambda m: rng.choice(m.group(1).split("|")), template)
    for name, value in (slots or {}).items():
        text = text.replace("{" + name + "}", value)
    for name, values in _SLOTS.items():
        if "{" + name + "}" in text:
            text = text.replace("{" + name + "}", rng.choice(values))
    return _SINGLE.sub(r"\1", text)


class Maker:
    """Material, wrappers and turns for one language."""

    def __init__(self, language: Language, english: Language, rng: random.Random) -> None:
        self.language, self.english, self.rng = language, english, rng

    def _pick(self, *path: str) -> Any:
        found = self.language.list(*path) or self.english.list(*path)
        return self.rng.choice(found)

    def noun(self, material: str) -> str:
        key = {"reviews": "data", "data": "data"}.get(material, material)
        return str(self._pick("nouns", key))

    def material(self, kind: str) -> str:
        rng = self.rng
        if kind == "prose":
            paragraphs = self.language.list("material", "prose")
            count = rng.choice((1, 1, 2, 3, 4, 6, 8, 12))
            chosen = [rng.choice(paragraphs) for _ in range(count)]
            title = [rng.choice(["Report", "Notice", "Update", "Summary of the week", "Memo"])] if rng.random() < 0.3 else []
            return "\n\n".join(title + chosen)
        if kind == "transcript":
            speakers = self.language.list("material", "speakers") or self.english.list("material", "speakers")
            lines = self.language.list("material", "transcript_lines")
            stamp = rng.random() < 0.3
            out = []
            for i in range(rng.randint(5, 30)):
                who = rng.choice(speakers)
                out.append(
                    f"{who} ({9 + i // 6:02d}:{(i * 7) % 60:02d}): {rng.choice(lines)}"
                    if stamp
                    else f"{who}: {rng.choice(lines)}"
                )
            return "\n".join(out)
        if kind == "reviews":
            lines = self.language.list("material", "review_lines")
            return "\n".join(f"{i}. ({rng.randint(1, 5)}/5) {rng.choice(lines)}" for i in range(1, rng.randint(4, 25)))
        if kind == "code":
            code = str(self._pick("material", "code"))
            return f"```\n{code}\n```" if rng.random() < 0.7 else code
        # data: a table or a log
        if rng.random() < 0.35:
            lines = self.english.list("material", "log_lines")
            return "\n".join(
                f"2024-0{rng.randint(1, 9)}-{rng.randint(10, 28)} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d} "
                + rng.choice(lines).replace("{n}", str(rng.randint(1, 999)))
                for _ in range(rng.randint(5, 40))
            )
        columns = rng.sample(self.english.list("material", "columns"), rng.randint(3, 6))
        rows = [",".join(columns)]
        for _ in range(rng.randint(4, 40)):
            rows.append(",".join(str(rng.randint(1, 5000)) if i else f"r{rng.randint(1, 99)}" for i in range(len(columns))))
        return "\n".join(rows)

    def message(self) -> str:
        """One short message as an app's users send them (a question to a shop, a complaint)."""
        return str(self.rng.choice(self.language.list("material", "inbox") or self.language.list("material", "review_lines")))

    def wrap(self, text: str) -> str:
        wrapper = str(self._pick("wrappers"))
        out = wrapper.replace("{x}", text)
        stories = self.language.list("backstories")
        if stories and self.rng.random() < BACKSTORY:
            story, space = self.rng.choice(stories), "" if self.language.lang in ("zh", "ja") else " "
            out = f"{story}{space}{out}" if self.rng.random() < 0.7 else f"{out}{space}{story}"
        if self.rng.random() < CHAT:
            out = out.lower()
            if self.rng.random() < 0.6:
                out = out.rstrip().rstrip(".?!。\uff1f\uff01")
        return out

    def pipeline(self, text: str) -> str:
        """`text` in a pipeline's template: the language's own ("Pregunta: ... Respuesta:") or English."""
        own = self.language.list("pipelines")
        found = own if own and self.rng.random() < 0.6 else self.english.list("pipelines")
        return str(self.rng.choice(found)).replace("{x}", text)

    def system(self) -> str:
        return str(self._pick("systems"))


def _row(
    payload: dict[str, Any], group: Group, shape: str, lang: str, template: str, tier: str | None = None, b: str | None = None
) -> dict[str, Any]:
    tier = tier or group.tier
    return payload | {
        "tier": tier,
        "tier_b": b or (group.b if tier == group.tier else None) or tier,
        "kind": group.kind,
        "shape": shape,
        "template": f"{lang}:{group.tier}:{group.kind}:{group.prompts.index(template)}",
        "lang": lang,
        "source": f"{GENERATED}{lang}",
        "split": "train",
    }


def material_task(maker: Maker, group: Group, lang: str) -> dict[str, Any]:
    rng = maker.rng
    kind = rng.choice(MATERIAL_FOR.get(group.kind, ("prose",)))
    material = maker.material(kind)
    template = rng.choice(group.prompts)
    instruction = fill(template, rng, {"noun": maker.noun(kind)})
    layout = rng.random()
    if group.kind in SYSTEM_KINDS and layout < 0.12:
        if rng.random() < ONE_MESSAGE and sets_the_task(instruction):
            material = maker.message()
        json_mode = group.kind in JSON_KINDS and rng.random() < 0.6
        payload: dict[str, Any] = {
            "messages": [
                {"role": "system", "content": f"{instruction} Reply with JSON only." if json_mode else instruction},
                {"role": "user", "content": material},
            ]
        }
        if json_mode:
            payload["response_format"] = {"type": "json_object"}
    elif layout < 0.22:
        payload = {
            "messages": [
                {"role": "user", "content": material},
                {
                    "role": "assistant",
                    "content": rng.choice(["Got it.", "Thanks, I've read it.", "OK.", "Received - what would you like?"]),
                },
                {"role": "user", "content": instruction},
            ]
        }
    elif rng.random() < PIPELINE:
        payload = {"prompt": rng.choice(PIPELINES_OVER_MATERIAL).format(i=instruction, m=material)}
    else:
        if layout < 0.55:
            text = f"{instruction}\n\n{material}"
        elif layout < 0.85:
            text = f"{material}\n\n{instruction}"
        else:
            text = f"{instruction.rstrip('.?!:')}:\n{material}"
        payload = (
            {"prompt": maker.wrap(text)} if rng.random() < 0.3 else {"messages": [{"role": "user", "content": maker.wrap(text)}]}
        )
        if rng.random() < 0.2 and "messages" in payload:
            payload["messages"].insert(0, {"role": "system", "content": maker.system()})
    return _row(payload, group, "material", lang, template)


def standalone_task(maker: Maker, group: Group, lang: str) -> dict[str, Any]:
    rng = maker.rng
    template = rng.choice(group.prompts)
    text = maker.pipeline(fill(template, rng)) if rng.random() < PIPELINE else maker.wrap(fill(template, rng))
    if rng.random() < 0.25:
        payload: dict[str, Any] = {"prompt": text}
    else:
        payload = {"messages": [{"role": "user", "content": text}]}
        if rng.random() < 0.25:
            payload["messages"].insert(0, {"role": "system", "content": maker.system()})
    if rng.random() < JSON_ANYWHERE and "messages" in payload:
        payload["messages"] = [{"role": "system", "content": 'Answer in JSON with the key "answer".'}, *payload["messages"][-1:]]
        payload["response_format"] = {"type": "json_object"}
    if group.kind.startswith("tool"):
        payload = {"messages": payload.get("messages") or [{"role": "user", "content": text}], "tools": rng.sample(TOOLS, 3)}
    return _row(payload, group, "standalone", lang, template)


def conversation(maker: Maker, group: Group, lang: str) -> dict[str, Any]:
    rng = maker.rng
    template = rng.choice(group.prompts)
    task = fill(template, rng)
    turns: list[dict[str, Any]] = [{"role": "user", "content": task}]
    how = rng.random()
    if how < 0.4:
        turns += [
            {"role": "assistant", "content": str(maker._pick("conversation", "clarify"))},
            {"role": "user", "content": fill(str(maker._pick("conversation", "answers")), rng)},
        ]
        tier, b = group.tier, None
    elif how < 0.75:
        turns += [
            {"role": "assistant", "content": "Here is a first part:\n" + task[:80] + " ... (continued)"},
            {"role": "user", "content": fill(str(maker._pick("conversation", "continue")), rng)},
        ]
        tier, b = group.tier, None
    else:
        turns += [
            {"role": "assistant", "content": "Here you go: " + task[:120] + " ... (answer)"},
            {"role": "user", "content": fill(str(maker._pick("conversation", "switch")), rng)},
        ]
        tier, b = "small", "small"
    return _row({"messages": turns}, group, "conversation", lang, template, tier, b)


def generate(seeds: Path = SEEDS, seed: int = 0, per_language: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """The generated rows, the same for the same seeds and `seed`, duplicates dropped."""
    languages = load(seeds)
    english = next(lang for lang in languages if lang.lang == "en")
    budget = dict(PER_LANGUAGE, **(per_language or {}))
    rows: list[dict[str, Any]] = []
    for language in languages:
        rng = random.Random(f"{seed}:{language.lang}")
        maker = Maker(language, english, rng)
        seen: set[str] = set()
        wanted = budget.get(language.lang, 200)
        for row in _stream(maker, language):
            key = json.dumps({k: row.get(k) for k in ("prompt", "messages")}, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            rows.append(row)
            wanted -= 1
            if wanted <= 0:
                break
    return rows


def _stream(maker: Maker, language: Language) -> Iterator[dict[str, Any]]:
    """Rows without end: a shape, then a tier, then a kind, then a template."""
    rng, lang = maker.rng, language.lang
    by_tier = {
        shape: {t: [g for g in groups if g.tier == t] for t in TIERS}
        for shape, groups in (("material", language.material_groups), ("standalone", language.standalone_groups))
    }
    conversational = [g for g in language.standalone_groups if g.tier != "small" and not g.kind.startswith("tool")]
    for _ in range(200_000):
        shape = rng.choices(("material", "standalone", "conversation"), (0.42, 0.43, 0.15))[0]
        if shape == "conversation" and conversational and language.list("conversation", "continue"):
            yield conversation(maker, rng.choice(conversational), lang)
            continue
        shape = "standalone" if shape == "conversation" else shape
        groups = by_tier[shape][rng.choice(TIERS)]
        if not groups:
            continue
        group = rng.choice(groups)
        yield material_task(maker, group, lang) if shape == "material" else standalone_task(maker, group, lang)


def write(rows: Sequence[dict[str, Any]], path: Path | None) -> None:
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if path is None:
        import sys

        sys.stdout.write(lines)
    else:
        path.write_text(lines)
