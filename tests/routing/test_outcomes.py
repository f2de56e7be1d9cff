"""The routing log: decisions and outcomes in, labelled requests out (pure parts)."""

from __future__ import annotations

from pathlib import Path

from gateway.routing.outcomes import RETRY_WINDOW_S, DecisionLog, labelled_rows

TIERS = ["small", "medium", "large"]


def chat(text: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}], "temperature": 0, "model": "auto"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_outcomes_label_the_requests_they_name(tmp_path: Path) -> None:
    clock = Clock()
    log = DecisionLog(tmp_path / "log.jsonl", clock=clock)
    log.decided("r1", "auto", TIERS, "small", "routed", 0.1, chat("one"))
    log.decided("r2", "auto", TIERS, "small", "routed", 0.1, chat("two"))
    log.decided("r3", "auto", TIERS, "medium", "routed", 0.4, chat("three"))
    log.decided("r4", "auto", TIERS, "large", "forced", None, chat("four"))
    log.decided("r5", "auto", TIERS, "small", "routed", 0.1, chat("five"))
    log.outcome("r1", "auto", "medium", "json_schema")
    log.outcome("r1", "auto", "small", "feedback")  # feedback wins over any other outcome
    log.outcome("r1", "auto", "large", "json_schema")
    log.outcome("r3", "auto", "large", "escalated")  # an upstream failure: left out by default
    # "two" asked again on a larger tier, by the client: a retry; "five" only after the window
    log.decided("r6", "auto", TIERS, "large", "forced", None, chat("two") | {"temperature": 1})
    clock.now += RETRY_WINDOW_S + 1
    log.decided("r7", "auto", TIERS, "medium", "forced", None, chat("five"))
    log.close()
    rows = {r["messages"][0]["content"]: r["tier"] for r in labelled_rows([tmp_path / "log.jsonl"])}
    assert rows == {"one": "small", "two": "large", "four": "large", "five": "medium"}
    assert "three" not in rows
    with_escalations = {r["messages"][0]["content"]: r["tier"] for r in labelled_rows([tmp_path / "log.jsonl"], escalations=True)}
    assert with_escalations["three"] == "large"
    first = labelled_rows([tmp_path / "log.jsonl"])[0]
    assert set(first) == {"messages", "tier", "source", "split", "router"}  # what the router reads, not the sampling


def test_a_log_without_requests_counts_outcomes_but_trains_nothing(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "log.jsonl", requests=False)
    log.decided("r1", "auto", TIERS, "small", "routed", 0.1, chat("secret prompt"))
    log.outcome("r1", "auto", "large", "feedback")
    log.close()
    assert "secret prompt" not in (tmp_path / "log.jsonl").read_text()
    assert labelled_rows([tmp_path / "log.jsonl"]) == []


def test_lines_that_are_not_json_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(
        '{"type": "decision", "id": "a", "tier": "small", "how": "forced", "request": {"prompt": "x"}}\nnot json\n[1]\n'
    )
    assert [r["prompt"] for r in labelled_rows([path])] == ["x"]
