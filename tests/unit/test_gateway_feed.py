"""Feed records as the gateway reads them (gateway/feed.py), and commands waiting for their answers
(gateway/answers.py)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.answers import Answers
from gateway.feed import FeedRecord, InvalidFeedRecord, decode
from kernel.errors import InboxUnavailable
from schemas.inbox import FeedHeader, FeedKind

FRAME = b'{"type":"inbox_update","v":1,"items":[],"unread":2}'


def test_a_record_decodes_from_its_key_value_and_headers() -> None:
    headers = [(FeedHeader.SEQ, b"12"), (FeedHeader.KIND, b"answer"), (FeedHeader.COMMAND, b"cmd_1")]
    assert decode(b"alice", FRAME, headers) == FeedRecord("alice", 12, FeedKind.ANSWER, FRAME, "cmd_1")
    record = decode(b"alice", FRAME, [(FeedHeader.KIND, b"notification"), (FeedHeader.SEQ, b"3")])
    assert (record.command_id, record.pushed) == (None, True)


@pytest.mark.parametrize(
    ("key", "value", "headers", "problem"),
    [
        (None, FRAME, [(FeedHeader.SEQ, b"1"), (FeedHeader.KIND, b"update")], "no key"),
        (b"alice", None, [(FeedHeader.SEQ, b"1"), (FeedHeader.KIND, b"update")], "no value"),
        (b"alice", FRAME, [(FeedHeader.KIND, b"update")], "no herald-seq header"),
        (b"alice", FRAME, [(FeedHeader.SEQ, b"1")], "no herald-kind header"),
        (b"alice", FRAME, [(FeedHeader.SEQ, b"one"), (FeedHeader.KIND, b"update")], "does not decode"),
        (b"alice", FRAME, [(FeedHeader.SEQ, b"1"), (FeedHeader.KIND, b"other")], "does not decode"),
        (b"\xff", FRAME, [(FeedHeader.SEQ, b"1"), (FeedHeader.KIND, b"update")], "does not decode"),
    ],
)
def test_a_record_without_what_every_record_carries_is_refused_without_echoing_it(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], problem: str
) -> None:
    with pytest.raises(InvalidFeedRecord, match=problem) as caught:
        decode(key, value, headers)
    assert "alice" not in str(caught.value)


async def test_an_answer_reaches_the_command_waiting_for_it_only() -> None:
    answers = Answers()
    with answers.expect("cmd_1") as first, answers.expect("cmd_2") as second:
        assert answers.awaited("cmd_1") and not answers.awaited("cmd_3")
        answers.answer("cmd_1", 4)
        answers.answer("cmd_3", 9)  # another instance's command
        assert await first == 4
        assert not second.done()
        answers.fail_all(InboxUnavailable("the feed was interrupted"))
        with pytest.raises(InboxUnavailable):
            await second
    assert not answers.awaited("cmd_1")


async def test_an_answer_after_the_wait_ended_is_dropped_quietly() -> None:
    answers = Answers()
    with answers.expect("cmd_1"), pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.Event().wait(), 0.01)
    answers.answer("cmd_1", 1)  # no one waits any more
    assert not answers.awaited("cmd_1")
