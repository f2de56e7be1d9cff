"""The rules refuse, by the form of the text, pairs no paraphrase could join; everything else is the verifier's."""

from __future__ import annotations

import pytest

from gateway.cache.rules import refuse


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        (
            "how many calories do i burn in 30 minutes of cycling",
            "how many calories do i burn in 90 minutes of cycling",
            "numbers",
        ),
        ("convert 5 km to miles", "convert 5.5 km to miles", "numbers"),
        ("is a 3 month old sleeping 14 hours normal", "is a 3 month old sleeping 4 hours normal", "numbers"),
        ("how do i reverse 'abc' in python", "how do i reverse 'abd' in python", "quoted"),
        ("how do i reverse 'abc' in python", "how do i reverse abcd in python", "quoted"),  # a whole word, not a part
        ('what does "carpe diem" mean', 'what does "carpe noctem" mean', "quoted"),
        ("was bedeutet „Fernweh“", "was bedeutet „Heimweh“", "quoted"),
        ("what does os.path.join do", "what does os.path.split do", "code"),
        ("why is `len(x)` slow", "why is `sum(x)` slow", "code"),
        ("what does user_id mean in this table", "what does user_name mean in this table", "code"),
    ],
)
def test_what_no_paraphrase_changes_must_match(a: str, b: str, reason: str) -> None:
    assert refuse(a, b) == reason
    assert refuse(b, a) == reason


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I fix a leaky faucet?", "how to repair a dripping tap"),
        ("what's the capital of France", "whats the capital of france"),
        ("convert 5 km to miles", "how many miles are 5 km?"),
        ("from 10 to 20", "from 20 to 10"),  # the same numbers: order is the verifier's to judge
        ("Book a flight from Paris to Berlin", "Book a flight from Berlin to Paris"),
        ("wie wechsle ich die zündkerzen", "wie wechsle ich die zundkerzen"),
        ("what is a perfume's 'dry down'", "what is the dry down of a perfume"),  # quoted on one side, written on the other
        ('what does "Carpe Diem" mean', "meaning of carpe diem"),
    ],
)
def test_everything_else_is_left_to_the_verifier(a: str, b: str) -> None:
    assert refuse(a, b) is None


def test_text_the_verifier_cannot_read_must_be_the_same_on_both_sides() -> None:
    unseen = {"浇水": ["浇", "水"], "交水": ["交", "水"], "hi 🙂": ["🙂"], "hello 🙂": ["🙂"]}

    def unreadable(text: str) -> list[str]:
        return next((v for k, v in unseen.items() if text.endswith(k)), [])

    assert refuse("怎么给多肉植物浇水", "怎么给多肉植物交水", unreadable) == "unreadable"
    assert refuse("hi 🙂", "hello 🙂", unreadable) is None  # the same unknown part: the rest is readable
    assert refuse("how do i water a cactus", "how should i water a cactus", unreadable) is None


def test_emoji_on_one_side_are_decoration_and_on_both_must_match() -> None:
    def unreadable(text: str) -> list[str]:
        return [c for c in text if ord(c) > 0x2000 and c != "\u2019"]

    assert refuse("how do i fold a frog", "how do i fold a frog? thanks so much 🙂", unreadable) is None
    assert refuse("bumper sticker 🙄 how do i remove it", "how do i remove a bumper sticker", unreadable) is None
    assert refuse("what does 🍆 mean", "what does 🍑 mean", unreadable) == "unreadable"
    assert refuse("what does 🍆 mean 🙂", "what does 🍆 mean", unreadable) == "unreadable"  # both have some: all must match
    assert refuse("怎么给多肉植物浇水 🙂", "怎么给多肉植物交水", unreadable) == "unreadable"
