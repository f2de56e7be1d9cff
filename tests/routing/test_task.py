"""The task apart from the material: what the router reads from a request before it judges it."""

from __future__ import annotations

import time

import pytest

from gateway.routing.features import FEATURE_NAMES, features
from gateway.routing.task import routed_text, split_turn, task

REPORT = "\n\n".join(
    [
        "Quarterly report",
        "Sales rose 4% in the north and fell 2% in the south, where two stores closed for refits. " * 3,
        "Costs were flat. Staff turnover fell to 11%, the lowest in five years, after the pay review. " * 3,
    ]
)
TABLE = "month,units,revenue\nJan,10,100\nFeb,12,120\nMar,9,90\nApr,14,140"


def feature(payload: dict[str, object], name: str) -> float:
    return features(payload)[FEATURE_NAMES.index(name)]


def test_a_question_after_a_pasted_document_is_the_instruction_wherever_it_is() -> None:
    question = "Which region fell, and why?"
    for text in (f"{REPORT}\n\n{question}", f"{question}\n\n{REPORT}"):
        found = task({"prompt": text})
        assert found.instruction == question
        assert found.material_chars >= len(REPORT) - 10
        assert routed_text({"prompt": text}) == question


def test_data_blocks_are_material_and_a_line_above_them_is_the_instruction() -> None:
    split = split_turn(f"Turn this CSV into a markdown table:\n{TABLE}")
    assert split.instruction == "Turn this CSV into a markdown table:" and split.data and "Feb,12,120" in split.material
    transcript = "\n".join(f"{who}: line {i} of the meeting" for i, who in enumerate(["Ana", "Ben", "Cy", "Dee", "Eli"]))
    split = split_turn(f"{transcript}\n\nWho spoke second?")
    assert split.instruction == "Who spoke second?" and split.data


def test_a_heading_of_pasted_notes_is_material_when_a_question_asks_about_them() -> None:
    notes = "residents' meeting 3 October\n1. lift broken since 12 September\n2. bins move to Thursday\n3. garden day 19 October\n4. treasurer: 612 in the bank\nnext meeting 7 November"
    split = split_turn(f"{notes}\n\nwhen is the garden day")
    assert split.instruction == "when is the garden day"
    assert "residents' meeting 3 October" in split.material and "next meeting 7 November" in split.material
    # With nothing else asking, the lines around the data are all there is to read.
    assert split_turn(notes).instruction == "residents' meeting 3 October\nnext meeting 7 November"


def test_a_prompt_templates_sections_say_which_part_asks() -> None:
    log = "\n".join(f"2024-03-0{d} 06:10 T0{d} vibration {d}.1 mm/s, oil 6{d}C" for d in range(1, 8))
    split = split_turn(f"### Instruction\nReturn the turbine IDs, comma-separated.\n\n### Input\n{log}\n\n### Response\n")
    assert split.instruction == "Return the turbine IDs, comma-separated." and "T03 vibration" in split.material
    case = "Patient note, 11 Feb: 34-year-old, pain when chewing for 3 weeks, worse with cold. " * 4
    split = split_turn(f"<case>\n{case}\n</case>\n<task>Weigh the diagnosis and the treatment options.</task>")
    assert split.instruction == "Weigh the diagnosis and the treatment options." and "Patient note" in split.material
    # A tagged document with the question outside it: the question is the instruction.
    split = split_turn(f"<document>\n{case}\n</document>\n\nHow long has the pain lasted?")
    assert split.instruction == "How long has the pain lasted?" and "Patient note" in split.material
    # A pasted document's own headings are not a template's: the question after it still asks.
    readme = f"# Tidewatch\n\n{case}\n\n## Notes\n\n{case}\n\nHow do I install it?"
    assert split_turn(readme).instruction == "How do I install it?"
    # Rule lines part blocks as blank lines do.
    rides = "\n".join(f"- {d} Mar: {40 + d} km, {d + 5} riders, avg 24.{d} km/h" for d in range(1, 8))
    split = split_turn(f"From the ride reports below, give the date of the longest ride.\n---\n{rides}\n---")
    assert split.instruction == "From the ride reports below, give the date of the longest ride." and split.data
    # Angle brackets that are not a template's sections (generics, comparisons) change nothing.
    generic, plain = (split_turn(f"fn parse(x: Vec{t}) -> u16 {{ 0 }}\n\nWhy does this not compile?") for t in ("<u16>", "[u16]"))
    assert generic.instruction.replace("<u16>", "[u16]") == plain.instruction and generic.material == plain.material


def test_code_is_material_and_the_request_about_it_is_kept() -> None:
    split = split_turn("What does this print?\n\n```python\nprint(sum(range(10)))\n```")
    assert split.instruction == "What does this print?" and split.code and "print(sum" in split.material


def test_a_long_request_without_material_stays_whole() -> None:
    request = (
        "Design a booking service for 40 clinics with real-time slots, no double bookings, GDPR-compliant storage, "
        "failover between two data centres, reminders by SMS and email, and an audit trail for every change made by "
        "staff, and explain the trade-offs of each choice you make along the way."
    )
    assert task({"prompt": request}).instruction == request and task({"prompt": request}).material_chars == 0


def test_an_inline_instruction_before_a_colon_is_apart_from_what_follows() -> None:
    long_text = " ".join(["The ferry leaves at nine and returns at five, weather permitting."] * 8)
    split = split_turn(f"Translate this into French: {long_text}")
    assert split.instruction == "Translate this into French:" and long_text in split.material


def test_an_ask_after_material_that_a_colon_opened_is_the_instruction() -> None:
    """ "... Data: <figures>. Build the case ..." asks after its material, not before the colon."""
    figures = " ".join(["Adult on-time returns fell from 81% to 77% after fines went, and borrowers rose 12%."] * 5)
    turn = f"Our library is weighing whether to abolish its last fines. Data: {figures} Build the case for and against, and give a recommendation."
    split = split_turn(turn)
    assert split.instruction.startswith("Our library is weighing") and split.instruction.endswith("give a recommendation.")
    assert figures.strip() in split.material
    # A head whose task word does not bid ("we want to build ...") leaves the ask after the material.
    needs = " ".join(["1,100 students, 78 teachers, 52 rooms of which 9 are labs, double lessons for science."] * 4)
    turn = f"We want to build our own timetabling system for a secondary school: {needs} Design the data model and the solver."
    assert split_turn(turn).instruction.endswith("Design the data model and the solver.")
    # Without an ask after it, the material is still apart from the line that brought it.
    assert split_turn(f"Here is a paragraph from the minutes: {figures}").instruction == "Here is a paragraph from the minutes:"


def test_timestamped_log_lines_are_data() -> None:
    log = "\n".join(f"2026-03-0{d} 0{d}:12:44 pump P{d} pressure dropped to {d}.1 bar, restarted" for d in range(1, 8))
    split = split_turn(f"{log}\nwhich pumps restarted more than once")
    assert split.data and split.instruction == "which pumps restarted more than once"


def test_a_turn_that_closes_the_exchange_does_not_carry_the_task_before_it() -> None:
    """ "great, that's exactly it" after a drafted note asks for nothing: it is not the note's task."""
    before = [
        {"role": "user", "content": "Draft a polite two-line note telling the parents that practice moves to Thursday."},
        {"role": "assistant", "content": "Dear parents, this week's practice is on Thursday. Thank you!"},
    ]
    closings = ("great, that's exactly it", "Thanks!", "perfect, thanks!", "Super, danke!", "谢谢", "works great, ta")
    closings += ("oh that makes sense now, thank you!", "thanks, that's all for now!", "ok great, that's it")
    for closing in closings:
        assert task({"messages": [*before, {"role": "user", "content": closing}]}).earlier == "", closing
    # Thanks with a new, unrelated question is a new task too.
    switched = {"messages": [*before, {"role": "user", "content": "thanks. btw how do you say 'note' in German?"}]}
    assert task(switched).earlier == ""
    # What goes on with the task still carries it.
    going_ons = ("perfect, now make it shorter", "great, write the long version", "ok go ahead", "tables too please")
    for going_on in (*going_ons, "ok, now the long version", "makes sense, now do the same for Friday"):
        assert task({"messages": [*before, {"role": "user", "content": going_on}]}).earlier.startswith("Draft a polite"), going_on


def test_an_answer_to_the_assistants_question_carries_the_task_it_asked_about() -> None:
    """The requirements of a hard task often come in the turn after "what formats appear?"."""
    asked = [
        {"role": "user", "content": "Can you write me a function to parse the dates in our old catalogue export?"},
        {"role": "assistant", "content": "Sure - what formats appear?"},
    ]
    answer = (
        "All sorts: '1987', 'c. 1890', '[19--]', 'MCMLXXII', '1899-1901', 'n.d.'. I need the earliest and latest "
        "possible year for each, a confidence flag, and it has to be fast over 2 million records."
    )
    found = task({"messages": [*asked, {"role": "user", "content": answer}]})
    assert found.earlier.startswith("Can you write me a function") and found.instruction == answer
    # After an answer that asked nothing back, a turn this long is a task of its own.
    told = [asked[0], {"role": "assistant", "content": "Here is a first version."}, {"role": "user", "content": answer}]
    assert task({"messages": told}).earlier == ""


def test_a_system_prompt_that_sets_the_task_makes_the_users_message_its_material() -> None:
    """An app that routes, scores or rewrites what its users send: the user's question is asked of
    the app's staff, and the model only works on it. A house style ("Summarise your reasoning") is
    no task."""
    message = "Hi, my card was blocked after I moved. Do I need to come in with proof of address or can I send a photo?"
    for system in (
        "Route each library patron message to one queue: LOANS, EVENTS, ACCOUNT, OTHER. Reply with the queue name only.",
        "You score app-store reviews for an astronomy app. Output one of: positive, negative, mixed.",
        "問い合わせを「予約」「料金」「設備」「その他」のいずれかに分類し、ラベルだけを返してください。",
        "Übersetze jede Nachricht ins Englische.",
        # work that opens the prompt, or is named in other words
        "Extract the time and the place of the meeting. Reply in JSON.",
        "Rewrite the user's question as a short search query for the help centre. Output only the query.",
        "Ordne jede Kundenanfrage der Bibliothek einer Kategorie zu: AUSLEIHE, KONTO, SONSTIGES.",
        "判断每条用户反馈的情感：正面、负面或中性。",  # noqa: RUF001 (a Chinese colon)
    ):
        found = task({"messages": [{"role": "system", "content": system}, {"role": "user", "content": message}]})
        assert found.instruction == system and found.material == message, system
    # A persona is no task: the user's message stays the instruction.
    personas = ("You are the library's assistant. Be warm and brief.", "Never mention the product label's dosing.")
    for persona in (*personas, "Summarise your reasoning at the end of each answer."):
        found = task({"messages": [{"role": "system", "content": persona}, {"role": "user", "content": message}]})
        assert found.instruction == message, persona


def test_a_short_follow_up_carries_the_task_it_continues() -> None:
    chat = {
        "messages": [
            {"role": "user", "content": "Prove that every tree with n nodes has n - 1 edges."},
            {"role": "assistant", "content": "Sure, by induction on n..."},
            {"role": "user", "content": "ok go ahead"},
        ]
    }
    found = task(chat)
    assert found.instruction == "ok go ahead" and found.earlier.startswith("Prove that every tree")
    assert routed_text(chat) == "Prove that every tree with n nodes has n - 1 edges.\nok go ahead"
    assert feature(chat, "follow_up") == 1 and feature(chat, "earlier_hard") > 0
    # A long last turn is a task of its own: the earlier one is not carried.
    fresh = {"messages": [*chat["messages"][:2], {"role": "user", "content": "Now " + "something else entirely " * 8}]}
    assert task(fresh).earlier == ""


def test_a_document_pasted_in_one_turn_and_asked_about_in_the_next_is_material() -> None:
    chat = {
        "messages": [
            {"role": "user", "content": REPORT},
            {"role": "assistant", "content": "Got it."},
            {"role": "user", "content": "What was the turnover rate?"},
        ]
    }
    found = task(chat)
    assert found.instruction == "What was the turnover rate?" and found.earlier == ""
    assert found.material_chars >= len(REPORT)


def test_a_task_in_the_system_prompt_over_material_in_the_user_turn() -> None:
    payload = {
        "messages": [
            {"role": "system", "content": "Summarise what the user sends in three bullets. Reply with JSON."},
            {"role": "user", "content": TABLE + "\n" + TABLE},
        ],
        "response_format": {"type": "json_object"},
    }
    found = task(payload)
    assert found.instruction.startswith("Summarise what the user sends") and found.data
    assert feature(payload, "summarise") > 0 and feature(payload, "json_mode") == 1


def test_an_apps_persona_in_the_system_prompt_does_not_make_a_request_harder() -> None:
    """A system prompt is the same for every request an app sends: its words ("never give a
    diagnosis", "step by step", "senior engineer") are no cue of one request's task; its length is."""
    personas = [
        "You are the assistant in a vet clinic's app. Be warm and precise. Never give a diagnosis.",
        "You are a patient tutor for adult learners. Explain step by step and prove each claim.",
        "You are a senior engineer helping a colleague. Answer with code where useful.",
    ]
    for asked in ("What is 18 multiplied by 12?", "Good afternoon! Just wanted to say thank you."):
        bare = features({"messages": [{"role": "user", "content": asked}]})
        for persona in personas:
            briefed = features({"messages": [{"role": "system", "content": persona}, {"role": "user", "content": asked}]})
            changed = {FEATURE_NAMES[i] for i, (a, b) in enumerate(zip(bare, briefed, strict=True)) if a != b}
            assert changed == {"log_tokens_all", "system_len"}, (persona, asked, changed)


def test_task_cues_are_read_in_the_instruction_not_in_the_material() -> None:
    essay = "\n\n".join(["We prove the theorem by induction and derive the bound; the proof is rigorous. " * 4] * 3)
    payload = {"prompt": f"{essay}\n\nHow many sentences are there?"}
    assert feature(payload, "proof") == 0 and feature(payload, "extract") > 0
    assert feature(payload, "answer_from_material") == 1 and feature(payload, "log_tokens_material") > 4


def test_a_question_for_an_expert_over_material_is_not_a_lookup() -> None:
    """ "Which airline is liable" over an airline's rules asks for a lawyer's judgement: it is no
    light extraction, though "which X is" starts like one."""
    rules = "\n".join(f"- Fare {k}: one bag up to {20 + k} kg included, extra bags EUR {30 + k} each." for k in range(8))
    payload = {
        "prompt": f"{rules}\n\nMy bag was lost on a connecting flight. Which airline is liable, and what can I claim under the Montreal Convention?"
    }
    assert feature(payload, "expert") > 0 and feature(payload, "light_over_material") == 0
    plain = {"prompt": f"{rules}\n\nWhich fare is the cheapest?"}
    assert feature(plain, "expert") == 0 and feature(plain, "light_over_material") == 1
    for lang, text in (
        ("de", "Wer haftet für den Schaden, und welche Ansprüche habe ich?"),
        ("zh", "谁应承担责任 我能要求什么赔偿"),
    ):
        assert feature({"prompt": text}, "expert") > 0, lang


def test_an_invoices_items_are_data() -> None:
    invoice = "Taller Hermanos Ruiz 14/11\nCambio de aceite y filtro 68,00\nPastillas de freno 94,50\nMano de obra 1,5 h 67,50\nIVA 21% 48,51\nTOTAL 278,51 €"
    split = split_turn(f"de esta factura solo dame el total y la fecha:\n\n{invoice}")
    assert split.data and split.instruction == "de esta factura solo dame el total y la fecha:"


def test_cues_in_other_languages() -> None:
    for lang, text, name in (
        ("de", "Fasse den Artikel in drei Sätzen zusammen.", "summarise"),
        ("fr", "Traduis ce texte en anglais.", "translate"),
        ("es", "Demuestra que la raíz de 2 es irracional.", "proof"),
        ("zh", "请证明素数有无穷多个。", "proof"),
        ("ja", "このシステムを設計してください。", "design"),
        ("hi", "इस खबर का सारांश लिखिए।", "summarise"),
    ):
        assert feature({"prompt": text}, name) > 0, (lang, text)


def test_any_request_gets_features_in_bounded_time() -> None:
    huge = "word " * 400_000  # ~100k tokens of material, one block
    payloads = [
        {"messages": []},
        {"messages": [{"role": "user", "content": ""}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "c", "content": "{}"}]},
        {"prompt": f"{huge}\n\nWhat is this about?"},
        {"prompt": "```\n" + huge},  # an unclosed fence
        {"prompt": "Résume ce texte 请总结 this: " + "données, " * 50_000},
        {"prompt": ["not", "a", "string"]},
    ]
    for payload in payloads:
        started = time.process_time()
        values = features(payload)
        assert len(values) == len(FEATURE_NAMES) and all(v == v and abs(v) < 1e6 for v in values)
        assert time.process_time() - started < 5  # bounded, not a benchmark: catches runaway regexes
        text = routed_text(payload)
        assert text is None or len(text) <= 4000


def test_an_instruction_after_a_document_longer_than_what_is_read_is_found() -> None:
    document = "\n\n".join(["The committee met on Tuesday and reviewed the budget line by line. " * 12] * 2000)
    found = task({"prompt": f"{document}\n\nWhich day did the committee meet?"})
    assert found.instruction == "Which day did the committee meet?"
    assert found.material_chars >= len(document)  # the size counts whole, though only the ends are read
    # A log read at its ends is cut at line ends: no half line ("10:37 worker-1 ...") joins the question.
    log = "".join(f"2024-03-{i % 28 + 1:02d} 10:{i % 60:02d} worker-{i % 9} timeout after {i % 500} ms\n" for i in range(22_000))
    assert task({"prompt": f"{log}Which worker timed out most?"}).instruction == "Which worker timed out most?"


def test_a_line_that_names_the_data_below_it_does_not_ask() -> None:
    """ "Selection A1:E9 (sheet 'Brews'):" names what a spreadsheet hands over; the question after
    it is the instruction, and the naming line is material."""
    sheet = "batch,style,og,fg,days\nB41,pils,1.048,1.010,21\nB42,stout,1.062,1.016,14\nB43,ipa,1.058,1.012,12\nB44,pils,1.047,1.009,23"
    for heading in ("Selection A1:E5 (sheet 'Brews'):", "museum_loans:"):
        split = split_turn(f"{heading}\n{sheet}\n\nwhich batch spent longest in the fermenter")
        assert split.instruction == "which batch spent longest in the fermenter" and heading in split.material
    # With nothing else asking, a line that asks is still the instruction.
    assert split_turn(f"Sort these by days:\n{sheet}").instruction == "Sort these by days:"


def test_json_records_stack_traces_diffs_and_rule_books_are_data() -> None:
    record = '{\n "customer": "Escape Hour GmbH",\n "plan": "Pro",\n "seats": 14,\n "open_tickets": [\n  5521,\n  5530\n ]\n}'
    trace = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/routes.py", line 88, in assign\n    rider = pick(zone)\n'
        '  File "/srv/app/dispatch.py", line 41, in pick\n    return min(candidates)\n'
        "ValueError: min() arg is an empty sequence"
    )
    diff = (
        "--- a/booking.py\n+++ b/booking.py\n@@ -12,4 +12,5 @@ def book(member, slot):\n"
        "-    if slot.free > 0:\n+    with slot.lock:\n+        if slot.free > 0:\n             return Booking(member, slot)"
    )
    rules = "Reisekostenrichtlinie (Auszug)\n§3 Bahnfahrten: 2. Klasse.\n§4 Hotel: bis 120 EUR pro Nacht.\n§5 Verpflegung: 14 EUR.\n§6 Belege binnen 30 Tagen."
    for material, question in (
        (record, "when do they renew"),
        (trace, "which file and line raised it"),
        (diff, "what does this change"),
        (rules, "Wie viel darf ein Hotel kosten?"),
    ):
        split = split_turn(f"{material}\n\n{question}")
        assert split.instruction == question and split.data, material[:30]
        assert material.splitlines()[0] in split.material


def test_an_emails_signature_and_quoted_lines_are_material() -> None:
    quoted = "\n".join(f"> {line}" for line in ("On Tue, Hilde wrote:", "We fly at 10:00.", "Bring gloves.", "Meet at the barn."))
    signature = "-- \nTom Berg\nHawk Walks Ltd\n+47 555 0101"
    split = split_turn(f"can you pull out the start time\n\n{quoted}\n\n{signature}")
    assert split.instruction == "can you pull out the start time"
    assert "Bring gloves." in split.material and "Hawk Walks Ltd" in split.material


def test_a_colon_in_a_time_or_in_brackets_does_not_cut_the_instruction() -> None:
    ask = (
        "Route 9 runs every 10 minutes 7:00-9:00 with 6 buses (round trip: 55 minutes) and route 14 every 30 minutes. "
        "Work out whether the 14 can leave 5 minutes earlier by re-timing route 9 without any gap on 9 above 12 "
        "minutes before 8:00, and show the timetable, or prove it cannot be done. The school starts at 8:15 and "
        "route 9 carries its pupils, so say what each change would mean for them and for the drivers' breaks."
    )
    transcript = "\n".join(f"[0{m}:00] Priya: point {m} about the spring timetable" for m in range(6))
    assert split_turn(f"{transcript}\n\n{ask}").instruction == ask


def test_an_ask_with_a_task_word_after_short_paragraphs_is_found() -> None:
    """Paragraphs of a report, each short, then "Using the report, quantify ...": the paragraph
    that bids is the instruction; "after the pay review" in the report does not bid."""
    ask = "The council wants the landfill share under 15%. Using the report, quantify the levers and build a plan."
    assert split_turn(f"{REPORT}\n\n{ask}").instruction == ask
    assert not split_turn(REPORT).instruction.startswith("Costs were flat")


def test_a_heading_before_a_document_does_not_make_a_follow_up_carry_it() -> None:
    """ "Tram depot shift notes:" and a pasted document, then "who's on nights?": the document is
    the follow-up's material, not a task it continues."""
    chat = {
        "messages": [
            {"role": "user", "content": f"Tram depot shift notes:\n\n{REPORT}"},
            {"role": "assistant", "content": "Got it."},
            {"role": "user", "content": "who's on nights?"},
        ]
    }
    found = task(chat)
    assert found.instruction == "who's on nights?" and found.earlier == "" and found.material_chars >= len(REPORT)


def test_an_answer_to_the_assistants_question_about_a_pasted_document_keeps_it_as_material() -> None:
    chat = {
        "messages": [
            {"role": "user", "content": REPORT},
            {"role": "assistant", "content": "I have the report. What would you like to know about it?"},
            {
                "role": "user",
                "content": "Mainly the staff side: how turnover moved and whether the pay review is the reason, for a note to the board.",
            },
        ]
    }
    found = task(chat)
    assert found.instruction.startswith("Mainly the staff side") and found.material_chars >= len(REPORT)


def test_a_question_and_the_answer_to_judge_are_material() -> None:
    ask = "Rate the assistant's answer from 1 to 5 for correctness and give one sentence of reasoning."
    judged = "Question: how long should a sourdough bulk ferment at 24C?\nAnswer: About 4-6 hours, until it has grown by half."
    split = split_turn(f"{ask}\n\n{judged}")
    assert split.instruction == ask and judged in split.material
    # A question with its answer still to come is the instruction.
    assert split_turn("Question: what is the capital of France?\nAnswer:").instruction.startswith("Question:")


def test_a_sentence_that_asks_only_how_to_answer_is_not_the_task() -> None:
    # Prompt writers put "think step by step" on easy requests and hard ones alike.
    for styled, plain in (
        ("Think step by step before you answer. How many people row in a coxed four?", "How many people row in a coxed four?"),
        (
            "Let's reason carefully and show every step.\nThe lesson starts at 13:30 and lasts 2 hours. When does it end?",
            "The lesson starts at 13:30 and lasts 2 hours. When does it end?",
        ),
        (
            "Convert 1,150 °C to Fahrenheit. Show your reasoning, then give the answer on its own line.",
            "Convert 1,150 °C to Fahrenheit.",
        ),
        ("Think step by step: how many legs do 3 spiders have?", "how many legs do 3 spiders have?"),
        (
            "一歩ずつ考えてから答えてください。次の文を英語に翻訳してください：「駅はどこですか」",  # noqa: RUF001 (a Japanese colon)
            "次の文を英語に翻訳してください：「駅はどこですか」",  # noqa: RUF001
        ),
        ("Zeig deinen Rechenweg. Was ist 12 mal 13?", "Was ist 12 mal 13?"),
    ):
        found = task({"prompt": styled})
        assert found.instruction == plain
        every = FEATURE_NAMES.index("log_tokens_all")  # the request's whole size still counts
        assert [f for i, f in enumerate(features({"prompt": styled})) if i != every] == [
            f for i, f in enumerate(features({"prompt": plain})) if i != every
        ]
    # Work asked for stays, however it is phrased, and so does a request that is only style.
    for kept in (
        "Explain step by step how a heat pump works.",
        "Show all steps to set up a VPN on a router",
        "Think step by step.",
    ):
        assert task({"prompt": kept}).instruction == kept
    earlier = task(
        {
            "messages": [
                {"role": "user", "content": "Let's reason carefully. What is 15% of 80?"},
                {"role": "assistant", "content": "12."},
                {"role": "user", "content": "and of 90?"},
            ]
        }
    )
    assert earlier.earlier == "What is 15% of 80?"


def test_worked_examples_and_the_input_after_them_are_material() -> None:
    prompt = (
        "Corrige l'orthographe, sans rien changer d'autre.\n\n"
        "Phrase : Les parcelle du jardins sont attribué en mars.\nCorrigé : Les parcelles du jardin sont attribuées en mars.\n\n"
        "Phrase : Les membre doivent payé la cotisation avant le 1er avril.\nCorrigé :"
    )
    split = split_turn(prompt)
    assert split.instruction == "Corrige l'orthographe, sans rien changer d'autre."
    assert "Les membre doivent payé" in split.material and "Les parcelle du jardins" in split.material
    # One labelled block is no set of examples: a short request stays whole, as before.
    one = "Sort these by date.\n\nName: Ana\nDate: 3 May"
    assert split_turn(one).material == ""


def test_a_letter_pasted_under_its_instruction_is_material() -> None:
    prompt = (
        "Extrae la fecha de llegada y el número de personas de este correo. Formato: llegada=AAAA-MM-DD; personas=N\n"
        "Hola, somos un grupo de cinco amigos y queremos subir el viernes 14 de agosto de 2026. ¿Hay que llevar saco? Gracias, Lucía"
    )
    split = split_turn(prompt)
    assert split.instruction.startswith("Extrae la fecha de llegada") and split.instruction.endswith("personas=N")
    assert split.material.startswith("Hola, somos") and "¿Hay que llevar saco?" not in split.instruction
    # A greeting that opens the turn is the asker's own.
    opening = "Hi, can you tell me when the library opens on Sundays?"
    assert split_turn(opening).instruction == opening


def test_an_ask_that_opens_with_return_or_output_is_the_instruction() -> None:
    newsletter = (
        "Plot inspections will take place on Saturday 11 April; please make sure paths are clear. The seed swap moves "
        "to the church hall on 25 April because the shed roof is being replaced. The summer show is on 22 August, with "
        "judging of the marrows at 2pm sharp. Fees for the year are due by 30 June; after that a late charge applies. "
        "Thank you to everyone who came to the hedge-laying day, and to the volunteers who cleared the pond."
    )
    ask = "Return ONLY a JSON array of every date in the text below, as YYYY-MM-DD. No prose."
    split = split_turn(f"{ask}\n\nGreenway Allotment Society - spring newsletter\n\n{newsletter}")
    assert split.instruction == ask and "summer show" in split.material


def test_the_conditions_listed_for_a_plan_are_part_of_its_task() -> None:
    # A rota or a seating plan is hard for its conditions, not for its ask.
    conditions = [
        "- 4 kids: Ava, Ben, Cal, Dot",
        "- Nobody does the same chore two days in a row",
        "- Dot can't do dishes",
        "- Ava has netball Wednesday so she can't set the table that day",
        "- Everyone does exactly 5 chores over the week",
    ]
    prompt = "Chore rota puzzle:\n" + "\n".join(conditions) + "\nFind a rota or tell me it's impossible and why."
    found = task({"prompt": prompt})
    assert "Find a rota or tell me it's impossible and why." in found.instruction
    assert "- Dot can't do dishes" in found.instruction and "- Nobody does the same chore two days in a row" in found.instruction
    assert feature({"prompt": prompt}, "constraints") > feature(
        {"prompt": "Find a rota or tell me it's impossible and why."}, "constraints"
    )
    japanese = "当番表を作りたいです。条件：\n・毎回2世帯で担当\n・同じ2世帯の組み合わせは2回まで\n・Bさんは第1土曜はできない\n・連続した2週に同じ世帯が入らない"  # noqa: RUF001
    assert "・連続した2週に同じ世帯が入らない" in task({"prompt": japanese}).instruction
    # A question about listed rules is a lookup: the rules stay material.
    rules = "\n".join(
        ["- No dogs on the beach before 7pm", "- Bins must be out by 7am", "- Only residents may park", "- No fires"]
    )
    asked = task({"prompt": f"{rules}\n\nwhat do the rules say about dogs?"})
    assert asked.instruction == "what do the rules say about dogs?" and "No fires" in asked.material


def test_a_documents_title_in_capitals_does_not_join_the_question_under_it() -> None:
    bill = "ACCOUNT SUMMARY\nNorthvale Energy Ltd\nAccount number: 8802 4417\nBill date: 14 November\nTotal: £148.87\nDue: 2 December"
    split = split_turn(f"{bill}\n\nwhats the account number and when is this due")
    assert split.instruction == "whats the account number and when is this due" and "ACCOUNT SUMMARY" in split.material
    # A line that opens the data beside a line that asks still asks with it.
    table = "Name: Ana\nScore: 12\nName: Ben\nScore: 9\nName: Cy\nScore: 14"
    split = split_turn(f"Need a Python module for our league:\n{table}\nExplain the approach before the code.")
    assert split.instruction.startswith("Need a Python module for our league:")


def test_step_by_step_on_its_own_is_answer_style() -> None:
    found = task({"prompt": "step by step please: if I put £25 a week into the pot, how much after 12 weeks?"})
    assert found.instruction == "if I put £25 a week into the pot, how much after 12 weeks?"
    kept = "Step by step, explain how a heat pump works."
    assert task({"prompt": kept}).instruction == kept


def test_a_cancellation_letter_is_not_a_lawyers_question() -> None:
    letter = "Schreib mir eine kurze Kündigung für mein Fitnessstudio-Abo, zum nächstmöglichen Termin."
    assert feature({"prompt": letter}, "expert") == 0
    assert feature({"prompt": "Ist die Kündigung unwirksam, wenn der Vermieter die Frist nicht einhält?"}, "expert") > 0


def test_columns_set_apart_by_spaces_or_tabs_are_data() -> None:
    census = "\n".join(
        [
            "Name              Relation   Cond.  Age   Occupation",
            "John Sutcliffe    Head       Mar    41    Fustian cutter",
            "Hannah Sutcliffe  Wife       Mar    38",
            "Mary Sutcliffe    Daur       Unm    15    Cotton weaver",
            "James Sutcliffe   Son               11    Scholar",
        ]
    )
    ask = "1881 census transcription, who is head of household and how old is Mary?"
    split = split_turn(f"{ask}\n\n{census}")
    assert split.instruction == ask and split.data and "Cotton weaver" in split.material
    pasted = "date\tclient\thours\n03/03\tBramley\t2.5\n04/03\tOstrowski\t4\n06/03\tLinden\t3"
    assert split_turn(f"total hours for Bramley?\n\n{pasted}").data
    # Prose with two spaces after its full stops is no table.
    prose = "We walked to the lake.  It rained.  We came back.\nThe dog was happy.  So were we.  Then tea.\n" * 2
    assert not split_turn(f"{prose}\nWhat did we do?").data


def test_an_ask_written_as_a_sentence_under_listed_records_is_part_of_the_instruction() -> None:
    records = "\n".join(
        [
            "- Baptism, St Mary's Oldham, 14 Mar 1838: William son of James Whitehead, weaver, and Betty.",
            "- 1851 census, Royton: William Whitehead, 12, piecer, born Oldham, son of James (48, weaver).",
            "- 1861 census, Ashton-under-Lyne: William Whitehead, 24, cotton spinner, born Royton, lodger.",
            "- Marriage, Ashton 1863: William Whitehead, 25, bachelor, spinner, father James Whitehead, weaver.",
        ]
    )
    ask = (
        "There were at least two other William Whiteheads baptised in Oldham in those years. Weigh the evidence "
        "record by record, say which links are strong or weak, and what I should look up next to settle it."
    )
    found = task({"prompt": f"Family tree question. Are these the same man? I've got:\n{records}\n{ask}"})
    assert ask in found.instruction and "piecer" in found.material
    # However long the ask, the colon whose records were taken does not cut it off again.
    longer = (
        ask + " Also tell me whether the marriage witness names, the lodging address and the occupations over "
        "the four records fit one life or two, and how sure you can be of each link given the gaps."
    )
    found = task({"prompt": f"Family tree question. Are these the same man? I've got:\n{records}\n{longer}"})
    assert longer in found.instruction
    # A line above CSV rows that ends with a colon asks, whatever its commas.
    rows = "region,orders,visits\nnorth,4713,2503\nsouth,4458,4930\neast,3685,4054\nwest,426,1675"
    asked = "Using the table, what is the average of orders, and which region is highest:"
    split = split_turn(f"{asked}\n{rows}")
    assert split.instruction == asked and "4458" in split.material


def test_lines_set_apart_by_spaced_dashes_are_data() -> None:
    log = "Mon 3rd - Hartley Joinery - 2h\nTue 4th - Penrose Cafe - 3.5h\nWed 5th - Hartley Joinery - 1h\nFri 7th - Tidewell Vets - 4h"
    ask = "Put these into a table with columns day, client, hours:"
    split = split_turn(f"{ask}\n\n{log}")
    assert split.instruction == ask and split.data and "Tidewell" in split.material
    # A sentence with an aside between dashes is no record.
    prose = (
        "We drove - slowly - to the coast.\nIt was late - too late - when we arrived.\nThe hotel - the old one - was shut.\n" * 2
    )
    assert not split_turn(f"{prose}\nWhere did we go?").data


def test_an_ask_in_german_french_or_spanish_after_a_colons_figures_joins_the_instruction() -> None:
    figures = (
        "1 250 € par mois (loyer, assurance, chauffage). Coût variable : 7 € par élève (papier, encre, cadre). Capacité : "
        "10 élèves par cours, 4 cours par semaine au plus. La demande suit q = 50 - 0,9 p élèves par semaine (p en euros). "
        "Les cours durent trois heures, je fournis les outils, et en juillet et en août la demande baisse d'un quart."
    )
    ask = "Trouve le prix qui maximise mon bénéfice et dis si un cinquième cours vaut le coup."
    found = task({"prompt": f"Je donne des cours de gravure. Coûts fixes : {figures} {ask}"})
    assert found.instruction.endswith(ask)
    zahlen = (
        "Miete 900 Euro im Monat, Material 6 Euro pro Person, höchstens 12 Personen pro Kurs und 3 Kurse pro Woche. Die "
        "Nachfrage liegt bei etwa q = 45 - 0,7 p Personen pro Woche, p in Euro, und im August fällt ein Kurs aus. Der Ofen "
        "braucht für jeden Brand etwa 40 Euro Strom, und ich brenne einmal pro Kurs."
    )
    frage = "Berechne den Preis mit dem höchsten Gewinn im Monat."
    assert task({"prompt": f"Ich plane Töpferkurse. Kosten: {zahlen} {frage}"}).instruction.endswith(frage)


def test_a_spreadsheet_formula_on_its_own_line_is_code_to_read() -> None:
    ask = "what does this do? it's in our expenses sheet"
    formula = '=SUMIFS(Claims!D:D, Claims!A:A, $B2, Claims!C:C, ">="&DATE(2026,4,1)) - VLOOKUP($B2, Paid!A:C, 3, FALSE)'
    split = split_turn(f"{ask}\n{formula}")
    assert split.instruction == ask and split.code and formula in split.material
    # An equation in a derivation is no formula.
    assert not split_turn("Simplify this step by step:\n= (x + 1)^2 - (x - 1)^2").code


def test_a_quotation_that_ends_the_turn_after_its_question_is_what_the_question_is_about() -> None:
    question = "किस प्लेटफ़ॉर्म से ट्रेन जाएगी?"
    quoted = "आपकी ट्रेन 12430 लखनऊ मेल प्लेटफ़ॉर्म 6 से 22:00 बजे रवाना होगी, कोच A1, बर्थ 21"
    found = task({"prompt": f'{question} "{quoted}"'})
    assert found.instruction == question and found.material_chars >= len(quoted)
    ask = "Is this text from my bank or a scam?"
    text = "Your card ending 4417 is blocked. Call 0161 496 0000 now to unlock it."
    assert task({"prompt": f"{ask} “{text}”"}).instruction == ask
    # A quotation inside the question, or a short one, is part of it.
    for whole in ('What does "break a leg" mean, and where does it come from?', 'Is "alot" a word? "alot of people"'):
        assert task({"prompt": whole}).instruction == whole


def test_a_time_difference_is_a_figure_to_look_up_not_two_ideas_to_compare() -> None:
    assert feature({"prompt": "whats the time difference between oslo and lima"}, "explain") == 0
    assert feature({"prompt": "whats the difference between a lease and a licence"}, "explain") > 0


def test_only_this_in_japanese_asks_for_an_extraction() -> None:
    asked = "このメールから集合時間と場所だけ教えてください。"
    assert feature({"prompt": asked}, "extract") > 0


@pytest.mark.parametrize(
    ("ask", "messages", "among"),
    [
        pytest.param(
            "sort each one into BOOKING, REFUND or OTHER:",
            '"can I move my lesson from thursday to friday"\n"I was charged twice for March, please sort"\n'
            '"do you have parking on site?"\n"book me in for the 6pm spin class"\n"where do I leave the key"',
            "spin class",
            id="one quotation per line",
        ),
        pytest.param(  # a short line with commas above records that are no CSV is the ask, not a CSV header
            "bike shop emails, mark each one REPAIR, SALE or OTHER",
            "1) my chain keeps slipping on the big cog, can you look at it\n2) do you still have the blue gravel bike in a 54\n"
            "3) what time do you shut on sundays\n4) puncture on the rear, need it by thursday",
            "gravel bike",
            id="numbered under a line with commas",
        ),
    ],
)
def test_messages_listed_under_their_ask_are_data(ask: str, messages: str, among: str) -> None:
    split = split_turn(f"{ask}\n{messages}")
    assert split.instruction == ask and split.data and among in split.material


def test_conditions_listed_under_a_line_that_ends_with_conditions_join_the_instruction() -> None:
    conditions = [
        "- Ninguna familia cocina dos semanas seguidas",
        "- Los López no pueden antes del día 10",
        "- La cena de Navidad tiene que ser en casa de los abuelos",
    ]
    text = "\n".join(
        [
            "Organiza las cenas de diciembre con estas condiciones:",
            "- 5 familias, una cena cada sábado y cada domingo",
            *conditions,
            "¿Es posible? Dame el calendario o dime qué condición hay que cambiar.",
        ]
    )
    instruction = task({"prompt": text}).instruction
    assert all(c in instruction for c in conditions), instruction


def test_the_questions_after_a_colons_figures_join_the_instruction_with_answer_style_after_them() -> None:
    figures = (
        "18 € par mois. Chaque hausse de 2 € fait partir 5 membres, et au-delà de 300 membres la salle est pleine. "
        "Le loyer est de 3 200 € par mois et chaque membre coûte 4 € (assurance, badge). Nous avons 240 membres."
    )
    questions = "Quel tarif maximise le résultat ? Et avec une deuxième salle à 1 500 € par mois, est-ce rentable ?"
    found = task(
        {"prompt": f"Notre salle d'escalade associative. Tarif actuel : {figures} {questions} Détaille le raisonnement."}
    )
    assert questions in found.instruction and "Détaille" not in found.instruction


def test_a_score_differential_is_no_doctors_reasoning() -> None:
    assert feature({"prompt": "Work out the differential for rounds of 88 and 91 at slope 128."}, "reasoning") == 0
    assert feature({"prompt": "Lay out the differential diagnosis for fever and rash after travel."}, "reasoning") > 0


def test_a_turn_that_only_thanks_is_marked_and_one_that_goes_on_is_not() -> None:
    def turns(last: str) -> dict[str, object]:
        return {
            "messages": [
                {"role": "user", "content": "Plan a 45-minute swim session for beginners."},
                {"role": "assistant", "content": "Warm-up 10 min, drills 20 min, games 10 min, cool-down 5 min."},
                {"role": "user", "content": last},
            ]
        }

    assert feature(turns("brilliant, that's spot on, they'll love the games 👍"), "thanks") == 1
    for goes_on in ("thanks! now make it 60 minutes", "thanks! unrelated, but prove that sqrt 2 is irrational"):
        assert feature(turns(goes_on), "thanks") == 0, goes_on


def test_a_reply_that_reports_back_and_ends_with_thanks_closes_the_exchange() -> None:
    payload = {
        "messages": [
            {"role": "user", "content": "My bike's gears skip under load since I changed the chain. What should I check first?"},
            {"role": "assistant", "content": "Check the cassette for wear first, then the chain length and the B-tension screw."},
            {"role": "user", "content": "it was the cassette, worn right down! thanks a lot"},
        ]
    }
    assert feature(payload, "thanks") == 1 and task(payload).earlier == ""
    # A first request that ends with thanks still asks.
    assert feature({"prompt": "Organise-moi un week-end à Lyon avec des enfants. Merci !"}, "thanks") == 0
    assert feature({"messages": [*payload["messages"][:2], {"role": "user", "content": "why is that, thanks"}]}, "thanks") == 0


def test_a_spanish_question_under_listed_conditions_asks_whatever_its_commas() -> None:
    conditions = [
        "- Cada turno necesita un socorrista al menos 2 horas entre 10:00 y 14:00",
        "- Marta y Raúl no pueden coincidir",
        "- Nadie trabaja más de 6 horas",
    ]
    ask = "¿Se puede? Dame el cuadrante por persona y hora, o di qué condición falla."
    text = "\n".join(
        ["Organiza los turnos de la piscina con estas condiciones:", "- 5 socorristas y 2 piscinas", *conditions, ask]
    )
    instruction = task({"prompt": text}).instruction
    assert ask in instruction and all(c in instruction for c in conditions), instruction


def test_pull_asks_for_an_extraction_over_short_paragraphs() -> None:
    ask = "Pull the closing date and the contact's email from this."
    notice = "\n\n".join(
        [
            "NOTICE OF TENDER - RIVERSIDE LIBRARY REFURBISHMENT",
            "The council invites tenders for the refurbishment of the Riverside Library reading room, including new "
            "lighting, shelving and an accessible entrance. Works are planned for the summer closure.",
            "Tenders must be returned by 12:00 on Friday 30 January. Late tenders will not be considered.",
            "Questions to the procurement team: tenders@riverside.example.gov, quoting ref RL-2027-04.",
        ]
    )
    found = task({"prompt": f"{ask}\n\n{notice}"})
    assert found.instruction == ask and found.material_chars >= len(notice) - 10
    assert feature({"prompt": f"{ask}\n\n{notice}"}, "extract") > 0


EXPERT_QUESTIONS = (
    # the law that applies, and the court
    "Mein Kunde in Italien zahlt nicht. Welches Recht gilt, und wo kann ich klagen?",
    "Mon client belge ne paie pas : quel est le droit applicable et quelle juridiction saisir ?",
    "Mi cliente en Portugal no paga. ¿Qué ley aplicable hay y qué jurisdicción es competente?",
    "My ferry from Italy to Greece was cancelled and the operator is Maltese. Which regulations apply to my refund?",
    "Perdí el enlace en un billete con dos aerolíneas. ¿Qué normativa aplica y a quién reclamo?",
    "Mon colis venu de Suisse est bloqué : quelle réglementation s'applique aux frais de douane ?",
    # a taxable benefit, what the tax office objects to
    "Dienstwagen mit 48.000 € Listenpreis: 1-%-Regelung oder Fahrtenbuch, und was beanstandet das Finanzamt meist?",
    "Is an electric company car still cheaper as a benefit in kind than a £450 monthly allowance at 40%?",
    # defamation
    "A councillor says our article is defamatory and threatens to sue. What are our defences?",
    "Un élu menace de nous poursuivre pour diffamation : quels moyens de défense avons-nous ?",
    "Ein Unternehmer wirft uns Verleumdung vor. Was können wir tun?",
    "Nos acusan de difamación por un reportaje. ¿Qué defensa tenemos?",
)


@pytest.mark.parametrize("asked", EXPERT_QUESTIONS)
def test_an_experts_question_is_read_in_each_language(asked: str) -> None:
    assert feature({"prompt": asked}, "expert") > 0, asked


def test_a_line_with_commas_above_csv_rows_is_their_header() -> None:
    assert "Jan,10,100" in split_turn(f"month, units, revenue\n{TABLE.split(chr(10), 1)[1]}").material


def test_tag_each_asks_for_a_classification() -> None:
    assert feature({"prompt": "tag each review below as PRAISE or GRIPE"}, "classify") > 0
    assert feature({"prompt": "what does the price tag on a used car leave out?"}, "classify") == 0


def test_a_sql_statement_pasted_without_a_fence_is_code_to_read() -> None:
    ask = "why does this return more rows than members?"
    query = "SELECT m.id, m.name, p.paid_on\nFROM members m\nLEFT JOIN payments p ON p.member_id = m.id\nWHERE m.active = 1;"
    split = split_turn(f"{ask}\n{query}")
    assert split.instruction == ask and split.code and "LEFT JOIN" in split.material
    # Prose that mentions a select is no statement.
    prose = "Select the two best offers from the list and say why.\nFrom the three quotes, which is cheapest?"
    assert not split_turn(prose).code


def test_a_puzzles_rules_after_its_colon_are_the_problem_not_material() -> None:
    rules = (
        "red, blue, green, white and yellow. The red one isn't at either end of the street. Blue must be next to "
        "green, on one side or the other. White is somewhere to the left of red. Green can't be the second house. "
        "Yellow is not next to white, and the middle house is never blue. The first house is not yellow either."
    )
    found = task({"prompt": f"Five houses in a street, each painted a different colour: {rules} Which colour is each house?"})
    assert "Green can't be the second house." in found.instruction and found.material_chars == 0
    # A document after the colon stays material.
    report = (
        "Revenue was 4.2m, up 6% on the year, with most of the growth from the online shop, which now makes up a "
        "third of sales. Costs rose faster than revenue because of the new warehouse lease and two senior hires. "
        "Cash at the year end was 1.1m, down from 1.6m, after the loan repayment in March. Marketing spend stayed "
        "at 5% of revenue, and the wholesale side lost its two largest accounts in the autumn."
    )
    found = task({"prompt": f"Annual figures for the board: {report} What should we cut first?"})
    assert "warehouse" not in found.instruction and found.material_chars > 200


def test_fixing_spelling_is_a_light_edit_not_debugging() -> None:
    asked = {"prompt": "fix the spelling pls: the meating is on wensday at the libary"}
    assert feature(asked, "debug") == 0 and feature(asked, "format") > 0
    assert feature({"prompt": "fix the off-by-one in this loop"}, "debug") > 0


def test_writing_something_out_in_german_is_an_extraction() -> None:
    asked = {"prompt": "Schreib mir alle Termine mit Uhrzeit aus der Mail raus."}
    assert feature(asked, "extract") > 0 and feature(asked, "compose") == 0
    reply = {"prompt": "Schreib eine kurze Antwort an den Kunden: das Paket geht heute raus, danke für die Geduld."}
    assert feature(reply, "compose") > 0
    assert feature({"prompt": "Such mir bitte alle Rechnungsnummern heraus."}, "extract") > 0
    assert feature({"prompt": "Bis wann muss ich laut Vertrag ausziehen?"}, "extract") == 0  # moving out


def test_fixing_grammar_is_a_light_edit_not_debugging() -> None:
    asked = {"prompt": "fix the grammar: 'the buses was late and the driver were rude'"}
    assert feature(asked, "debug") == 0 and feature(asked, "format") > 0


def test_a_system_prompt_that_lists_the_json_fields_to_fill_sets_the_task() -> None:
    system = "Return JSON with merchant, date and total from the user's receipt. Use null for anything missing."
    note = "lunch at Dario's, 14 march, came to 23.40 with the tip"
    found = task({"messages": [{"role": "system", "content": system}, {"role": "user", "content": note}]})
    assert found.instruction == system and found.material_chars == len(note)
    # A house style of JSON answers sets no task: the user's question is it.
    question = "How do I get a refund for a cancelled train?"
    found = task(
        {
            "messages": [
                {"role": "system", "content": "You are a rail help bot. Reply in JSON."},
                {"role": "user", "content": question},
            ]
        }
    )
    assert found.instruction == question


def test_sorting_into_named_groups_in_japanese_is_a_classification() -> None:
    assert feature({"prompt": "次の料理を「和食」「洋食」「中華」に分けてください。天ぷら、麻婆豆腐、オムライス"}, "classify") > 0


def test_biological_replicates_are_no_system_design() -> None:
    assert feature({"prompt": "how many biological replicates do I need for a western blot?"}, "design") == 0
    assert feature({"prompt": "keep the read replicas consistent after a failover"}, "design") > 0


def test_a_mailing_list_is_nothing_to_extract() -> None:
    assert feature({"prompt": "Écris un message pour la liste de diffusion du club : réunion jeudi à 19 h."}, "extract") == 0
    assert feature({"prompt": "Liste les dates de livraison de ce bon de commande."}, "extract") > 0


def test_words_that_end_in_nt_are_no_conditions() -> None:
    """'went', 'sent' and 'tenant' are no "n't": a colon's tail of such sentences stays material."""
    notes = (
        "The tenant went through every room with the agent. The client sent the deposit on Monday. The parent company "
        "paid the rent for March. The accountant spent the afternoon on the inventory. The agent went home at six. The "
        "tenant's dog went into the garden twice. The client's lawyer sent a long email about the boiler."
    )
    found = task({"prompt": f"Tuesday's viewing at Elm Road: {notes} Which of these go in the file note?"})
    assert "accountant" not in found.instruction and found.material_chars > 200
