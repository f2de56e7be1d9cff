"""Before the verifier reads a pair, a misspelling of the other side's word is written as that word."""

from __future__ import annotations

import pytest

from gateway.cache.verifier import aligned, respell

VOCABULARY = {"how", "to", "fix", "a", "leaking", "kitchen", "faucet", "desert", "dessert", "plants", "capital", "of", "later"}


def known(word: str) -> bool:
    return word in VOCABULARY


@pytest.mark.parametrize(
    ("query", "candidate", "respelt"),
    [
        ("how to fix a leaking kitchen faucit", "how to fix a leaking kitchen faucet", "how to fix a leaking kitchen faucet"),
        ("How to fix a Leakign faucet", "how to fix a leaking faucet", "How to fix a leaking faucet"),  # swapped letters
        ("whats the time", "what's the time", "what's the time"),  # a missing apostrophe
        ("wie wechsle ich die zundkerzen", "wie wechsle ich die zündkerzen", "wie wechsle ich die zündkerzen"),
        ("a good begginer telescope", "a good beginner telescope", "a good beginner telescope"),  # two edits, a long word
        ("how does it wrok", "how does it work", "how does it work"),  # a short word: neighbours swapped
        ("how do i kep gulls away", "how do i keep gulls away", "how do i keep gulls away"),  # a short word: a letter dropped
        ("my sour dough starter", "my sourdough starter", "my sourdough starter"),  # one word written as two
        ("care for a new tatto", "care for a new tattoo", "care for a new tattoo"),  # a doubled last letter dropped
        ("fold a crane step by setp", "fold a crane step by step", "fold a crane step by step"),  # its word is also spelt right
    ],
)
def test_a_typo_is_read_as_the_word_it_stands_for(query: str, candidate: str, respelt: str) -> None:
    assert respell(query, candidate, known) == respelt


@pytest.mark.parametrize(
    ("query", "candidate"),
    [
        ("desert plants", "dessert plants"),  # both are words: a different question, not a typo
        ("capital of Austria", "capital of Australia"),  # two edits apart
        ("capital of Iran", "capital of Iraq"),  # too short to tell a typo from another word
        ("a colder beer", "a bolder beer"),  # another first letter
        ("the lyon train", "the lion train"),  # a short word with a letter changed: may be another word
        ("a sunrise photo", "a sunset photo"),  # eight letters, but more than two edits
        ("what cant i weld", "what can i weld"),  # a letter more at the end makes another word
        ("it wont start", "it won start"),
        ("step by step", "step by setp"),  # the query has as many of the word as the candidate
    ],
)
def test_other_words_are_left_for_the_model(query: str, candidate: str) -> None:
    assert respell(query, candidate, known) == query


def test_either_side_may_hold_the_typo_and_a_word_with_two_look_alikes_is_left() -> None:
    assert aligned("how to fix a faucet", "how to fix a faucit", known) == ("how to fix a faucet", "how to fix a faucet")
    # Neither is a word the vocabulary knows: one side is written as the other, never both swapped.
    first, second = aligned("delete my LinkedIn account", "delete my LinekdIn account", known)
    assert first == second
    assert respell("the bant", "the bank or the band", known) == "the bant"  # one edit from two words: no guess
