"""Cache keys: equal only when the answer must be equal."""

from __future__ import annotations

from typing import Any

from gateway.cache.keys import exact_key, semantic_namespace

BASE: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
    "temperature": 0,
    "max_tokens": 50,
}


def key(**changes: Any) -> str:
    return exact_key("chat/completions", "small", {**BASE, **changes})


def test_fields_that_do_not_change_the_answer_do_not_change_the_key() -> None:
    same = key(stream=True, stream_options={"include_usage": True}, user="u-1", metadata={"trace": "x"}, model="alias")
    assert same == key()
    reordered = dict(reversed(list(BASE.items())))
    assert exact_key("chat/completions", "small", reordered) == key()


def test_every_answer_determining_field_changes_the_key() -> None:
    variants = [
        key(temperature=0.7),
        key(max_tokens=51),
        key(seed=1),
        key(n=2),
        key(stop=["\n"]),
        key(top_p=0.5),
        key(tools=[{"type": "function", "function": {"name": "f"}}]),
        key(response_format={"type": "json_object"}),
        key(top_k=40),  # a field the gateway does not know is kept, never dropped
        key(messages=[*BASE["messages"][:1], {"role": "user", "content": "Capital of Spain?"}]),
        exact_key("chat/completions", "large", BASE),
        exact_key("completions", "small", BASE),
        exact_key("chat/completions", "small", BASE, tenant="acme"),
    ]
    assert len({key(), *variants}) == len(variants) + 1


def test_semantic_namespace_ignores_the_user_turn_but_not_the_system_prompt_or_settings() -> None:
    ns = semantic_namespace("chat/completions", "small", BASE)
    other_question = {**BASE, "messages": [BASE["messages"][0], {"role": "user", "content": "Largest ocean?"}]}
    assert semantic_namespace("chat/completions", "small", other_question) == ns
    other_system = {**BASE, "messages": [{"role": "system", "content": "Answer in French."}, BASE["messages"][1]]}
    assert semantic_namespace("chat/completions", "small", other_system) != ns
    assert semantic_namespace("chat/completions", "small", {**BASE, "temperature": 1}) != ns
    assert semantic_namespace("chat/completions", "large", BASE) != ns


def ask(text: str) -> str:
    return key(messages=[BASE["messages"][0], {"role": "user", "content": text}])


def test_case_spacing_and_trailing_punctuation_of_the_question_share_an_entry() -> None:
    base = ask("How do I reset my password?")
    assert ask("how do i reset my password") == base
    assert ask("  How do I   reset\nmy password ?!") == base
    assert ask("How do I reset my password.") == base
    assert ask("How do I reset my email password?") != base  # different words: a different entry
    assert ask("How do I reset my password? Quickly.") != base  # only trailing punctuation is dropped
    assert ask("What is 5!") != ask("What is 5")  # after a digit it may be the question (a factorial)
    parts = [{"type": "text", "text": "HOW DO I RESET MY PASSWORD"}]
    assert ask(parts) == ask([{"type": "text", "text": "how do i reset my password?"}])  # type: ignore[arg-type]


def test_quoted_text_code_and_other_roles_are_kept_as_written() -> None:
    assert ask('Translate "Hello World" to French') != ask('translate "hello world" to french')
    assert ask("Spell 'NASA' backwards") != ask("Spell 'nasa' backwards")
    assert ask("What does `getURL` return?") != ask("what does `geturl` return?")
    assert ask("```\nX = 1\n```\nwhat is x") != ask("```\nx = 1\n```\nwhat is x")
    assert ask("Fix this:\nif x:\n    y()") != ask("Fix this:\nif x:\n  y()")  # indentation is code
    system = [{"role": "system", "content": "Answer in CAPITALS."}, BASE["messages"][1]]
    assert key(messages=system) != key(messages=[{"role": "system", "content": "answer in capitals"}, BASE["messages"][1]])
    prompt = exact_key("completions", "small", {"prompt": "Capital of France?"})
    assert exact_key("completions", "small", {"prompt": "capital of france"}) == prompt
