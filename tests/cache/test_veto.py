"""The veto refuses hits between prompts that differ where the answer does, and lets paraphrases through."""

from __future__ import annotations

import pytest

from gateway.cache.veto import veto

MUST_VETO = [
    ("How do I tie a tie?", "How do I tie a bow tie?", "modifier"),
    ("Where is the button on my router?", "Where is the reset button on my router?", "modifier"),
    ("How do I convert a dict to a JSON string in Python?", "How do I convert a JSON string to a dict in Python?", "direction"),
    ("What is 15% of 240?", "What is 15% of 420?", "numbers"),
    ("Give me three tips for sleeping better.", "Give me five tips for sleeping better.", "numbers"),
    ("Is it safe to drink coffee while pregnant?", "Is it not safe to drink coffee while pregnant?", "negation"),
    ("I want to cancel my order.", "I don't want to cancel my order.", "negation"),
    ("Convert 10 miles to km.", "Convert 10 km to miles.", "direction"),
    ("Translate this from English to French: good night", "Translate this from French to English: good night", "direction"),
    ("Book a flight from Paris to Berlin.", "Book a flight from Berlin to Paris.", "direction"),
    ("How do I switch from running to cycling?", "How do I switch from cycling to running?", "direction"),
    ("How can I increase my heart rate?", "What reduces my heart rate?", "polarity"),
    ("Translate 'good luck' into French.", "Translate 'good night' into French.", "entities"),
    ("What's the best way to learn Python's asyncio?", "How often should I practise asyncio in Python?", "asks"),
    ("What should I pack for a week in Norway?", "What should I pack for a month in Norway?", "units"),
    ("How big is a tennis court in square feet?", "How big is a tennis court in square meters?", "units"),
    ("How tall is the Eiffel Tower in feet?", "How tall is the Eiffel Tower in meters?", "units"),
    ("How many minutes are in a day?", "How many hours are in a day?", "units"),
    ("What is 50 kilometers in miles?", "What is 50 kilometers in nautical miles?", "units"),
    ("Write a story about a robot.", "Write a story about a robot in the second person.", "format"),
    ("What is the capital of France?", "What is the capital of Spain?", "entities"),
    ("Who won the 2018 World Cup?", "Who won the 2022 World Cup?", "numbers"),
    ("What is the largest planet?", "What is the smallest planet?", "polarity"),
    ("Should I buy Tesla stock now?", "Should I sell Tesla stock now?", "polarity"),
    ("How many calories in 100 grams of rice?", "How many calories in 100 ounces of rice?", "units"),
    ("Write the answer in JSON.", "Write the answer in YAML.", "entities"),
    ("Explain what `os.path.join` does.", "Explain what `os.path.split` does.", "entities"),
    ("Is Python faster than Java?", "Is Java faster than Python?", "direction"),
    # Worded alike but for one swapped content word, or two that trade places: no word list needed.
    ("Write a formal email declining the offer.", "Write a casual email declining the offer.", "substitution"),
    ("Is it legal to fish here at night?", "Is it illegal to fish here at night?", "substitution"),
    ("Did Sparta defeat Athens?", "Did Athens defeat Sparta?", "substitution"),
    ("How do I turn on Bluetooth?", "How do I turn off Bluetooth?", "polarity"),
    ("Is it possible to undo a sent email?", "Is it impossible to undo a sent email?", "substitution"),
    ("How do I scroll up in the terminal?", "How do I scroll back in the terminal?", "substitution"),
    ("Cast a float as an int in C.", "Cast an int as a float in C.", "substitution"),  # articles aside
    # What the question asks for: a person, a place, a time.
    ("What is stoicism?", "Who founded stoicism?", "asks"),
    ("How do tides work?", "When is high tide today?", "asks"),
    ("How is olive oil made?", "Where is olive oil made?", "asks"),
    ("How do I get over jet lag?", "What's the best time to book flights?", "asks"),
    ("Who built the Eiffel Tower?", "When was the Eiffel Tower built?", "asks"),
    ("How do I teach a child to swim?", "At what age can a child learn to swim?", "asks"),
    # ...or a method against an amount or a reason.
    ("How do I repot an orchid?", "How often should I repot an orchid?", "asks"),
    ("How do I fix a slow laptop?", "What makes a laptop slow?", "asks"),
    # ...or what a thing is against how to use it, or how often.
    ("What is a hedge fund?", "How do I invest in a hedge fund?", "asks"),
    ("What's a goroutine?", "How do I stop a goroutine?", "asks"),
    ("What does a septic tank do? What is a septic tank?", "How often should a septic tank be pumped?", "asks"),
    # The shape asked for, on one side only or different.
    ("Explain recursion.", "Explain recursion as a bulleted list.", "format"),
    ("Give me the results in a table.", "Give me the results as a numbered list.", "format"),
    # Who the answer is for, on one side only or different.
    ("Explain how DNS works.", "Explain how DNS works to a network engineer.", "audience"),
    ("Explain inflation for beginners.", "Explain inflation for economists and investors.", "audience"),
    ("Explain entropy for children.", "Explain entropy for physicists.", "audience"),
    # What to do after something happened is not whether it is all right.
    ("Can dogs eat grapes?", "What should I do if my dog ate grapes?", "asks"),
]

MUST_PASS = [
    ("What is the capital of France?", "What's the capital city of France?"),
    # A time of day is not an amount of time; "say no" refuses; "two-player" says two; a name written in lower case or opening a sentence.
    ("Why does my phone battery drain faster during the day?", "What makes my phone battery run down so quickly?"),
    ("How do I start a compost pile in my yard?", "What's the way to begin composting in a backyard?"),  # a yard, not yards
    ("Why do my feet hurt after running?", "What causes sore soles after a run?"),
    ("How do I say no to extra shifts at work?", "What's a polite way to turn down extra shifts when my manager asks?"),
    ("Plan a two-day Rome trip.", "Give me a 2-day itinerary for Rome."),
    ("Recommend games for two players.", "What are good two-player games?"),
    ("How do I stop Word from autocorrecting?", "Word keeps autocorrecting my text, how do I turn that off?"),
    ("What's a good regex for a US zip code?", "Regex for US ZIP codes?"),
    # A quoted phrase asks nothing of its own; an apostrophe in "what's" quotes nothing.
    ("Translate 'where can I buy tickets' into Spanish.", "What's the Spanish for 'where can I buy tickets'?"),
    # "What makes a good X" asks for qualities, not a cause.
    ("What makes a good README?", "How do I write a good README?"),
    # "From" naming what is kept from happening, not a direction.
    ("How do I stop my cat from scratching the sofa?", "What can I do to prevent a cat from clawing the couch?"),
    ("How do I keep my windshield from fogging up?", "What stops a car windscreen from misting over?"),
    # "What is" asking an amount, not what a thing is.
    ("What is the speed of light?", "How fast does light travel?"),
    ("What is an electric car's range?", "How far can an electric car go on a charge?"),
    ("What is a pension?", "Can you explain how a pension plan works?"),
    ("What does DNS mean?", "What is DNS?"),
    ("How do I reset my password?", "How can I reset my password?"),
    ("Summarise the plot of Hamlet.", "Summarize the plot of Hamlet."),  # spelling, not substitution
    ("What is the largest ocean on Earth?", "Which ocean is the largest on Earth?"),  # moved, nothing between
    ("Give me three tips for sleeping better.", "Share three tips to sleep better."),
    ("Translate 'good night' into Spanish.", "How do you say 'good night' in Spanish?"),
    ("What is 15% of 240?", "Calculate 15% of 240."),
    ("Explain photosynthesis simply.", "Can you explain photosynthesis in simple terms?"),
    ("Who wrote Pride and Prejudice?", "Who is the author of Pride and Prejudice?"),
    ("Please summarise the plot of Hamlet.", "Summarize the plot of Hamlet."),
    ("When did the Berlin Wall fall?", "In what year did the Berlin Wall come down?"),
    ("How do I stay calm when I'm anxious?", "How can I calm myself if I feel anxious?"),  # a clause, not a question
    ("What is a time signature in music?", "Can you explain time signatures in music?"),
    ("Who painted Guernica?", "Which artist painted Guernica?"),
    ("How long does a marathon take?", "What's the average marathon time?"),  # an amount against no kind
    ("How do I merge cells in a table in Word?", "How can I merge table cells in Word?"),  # a table, not a format
    ("Explain taxes to a beginner.", "Can you explain taxes for beginners?"),  # the same audience
    ("Explain recursion to me.", "Can you explain recursion?"),  # "me" is no audience
    ("Give me tips for a job interview.", "Tips for a job interview, please."),  # "for" a thing
    ("What should I do if I lose my passport?", "What to do if you lose your passport?"),
    ("How does the immune system fight infection?", "How does the body's immune system fight off infections?"),  # an owner
    ("What is the gig economy?", "Explain the term gig economy."),  # a framing noun
    ("What's a way to learn Spanish?", "What's a good way to learn Spanish?"),  # grading, not narrowing
    ("How do I convert a PDF to Word?", "How can I convert a PDF file to Word?"),  # no sides traded
    ("What is the difference between a latte and a cappuccino?", "How does a cappuccino differ from a latte?"),  # symmetric
    ("What is the difference between TCP and UDP?", "How is UDP different from TCP?"),
]


@pytest.mark.parametrize(("a", "b", "reason"), MUST_VETO)
def test_answer_deciding_differences_are_vetoed(a: str, b: str, reason: str) -> None:
    assert veto(a, b) == reason
    assert veto(b, a) == reason


@pytest.mark.parametrize(("a", "b"), MUST_PASS)
def test_paraphrases_are_not_vetoed(a: str, b: str) -> None:
    assert veto(a, b) is None
