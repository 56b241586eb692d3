"""The sans-I/O AMI codec against the recorded byte streams of a real Asterisk 22."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.ami import AmiMessage, AmiParser, encode_action, encode_message, unescape_c
from routing.errors import AmiProtocolError
from tests.ami_streams import RecordedStream, load_exchanges, load_stream, load_streams
from tests.conftest import captures_path

STREAMS = load_streams(captures_path())
BARE_LF_STREAM = "ami_events_member_lifecycle.raw"


def parse_all(data: bytes) -> list[AmiMessage]:
    parser = AmiParser()
    messages = parser.feed(data)
    parser.feed_eof()
    return messages


def naive_blocks(data: bytes) -> list[list[bytes]]:
    """Lines of each message, the obvious way (banner dropped)."""
    body = data.split(b"\r\n", 1)[1]
    return [block.split(b"\r\n") for block in body.split(b"\r\n\r\n")[:-1]]


def snapshot(messages: list[AmiMessage]) -> list[tuple[object, ...]]:
    return [(m.kind, m.name, m.headers, m.body) for m in messages]


@pytest.mark.parametrize("stream", STREAMS, ids=lambda s: s.name)
def test_stream_parses_into_the_indexed_messages(stream: RecordedStream) -> None:
    parser = AmiParser()
    messages = parser.feed(stream.data)
    parser.feed_eof()
    assert parser.banner == "Asterisk Call Manager/11.0.0"
    assert len(messages) == len(stream.index)
    for msg, entry in zip(messages, stream.index, strict=True):
        assert (msg.kind, msg.name) == (entry.kind, entry.name)
        if entry.action_id is not None:
            assert msg.action_id == entry.action_id
    assert messages[-1].kind == "response" and messages[-1].name == "Goodbye"


@pytest.mark.parametrize("stream", STREAMS, ids=lambda s: s.name)
def test_every_header_is_kept_in_order(stream: RecordedStream) -> None:
    messages = parse_all(stream.data)
    blocks = naive_blocks(stream.data)
    assert len(messages) == len(blocks)
    for msg, lines in zip(messages, blocks, strict=True):
        naive = [line.split(b": ", 1) for line in lines if b": " in line]
        assert len(msg.headers) == len(naive) == len(lines)
        expected = [(n.decode(), v.decode().rstrip("\n")) for n, v in naive]
        assert list(msg.headers) == expected
        assert msg.body == ()


def test_empty_values_and_duplicates_are_kept() -> None:
    messages = [m for s in STREAMS for m in parse_all(s.data)]
    empties = [m for m in messages if any(v == "" for _, v in m.headers)]
    assert len(empties) > 50  # panoramisk drops these headers
    member = next(m for m in messages if m.name == "QueueMemberAdded")
    assert member.get("PausedReason") is not None
    pause = next(m for m in messages if m.name == "QueueMemberPause" and m.get("Paused") == "0")
    assert pause["PausedReason"] == ""
    assert "PausedReason" in pause


def test_stray_bare_lf_stays_in_its_message_and_next_message_is_intact(captures_dir: Path) -> None:
    stream = load_stream(captures_dir, BARE_LF_STREAM)
    assert b"Message: No Contacts found\n\r\n\r\n" in stream.data
    messages = parse_all(stream.data)
    i = next(i for i, m in enumerate(messages) if m.action_id == "r2-6")
    assert messages[i].headers == (
        ("Response", "Error"),
        ("ActionID", "r2-6"),
        ("Message", "No Contacts found"),
    )
    assert messages[i + 1].name == "ChallengeSent"
    assert messages[i + 1].get("Privilege") == "security,all"


@pytest.mark.parametrize(
    "name", [BARE_LF_STREAM, "ami_events_agi_call_101_agi_hangup.raw", "ami_events_exit_with_digit.raw"]
)
def test_stream_fed_one_byte_at_a_time(captures_dir: Path, name: str) -> None:
    stream = load_stream(captures_dir, name)
    reference = snapshot(parse_all(stream.data))
    parser = AmiParser()
    got: list[AmiMessage] = []
    for i in range(len(stream.data)):
        got += parser.feed(stream.data[i : i + 1])
    parser.feed_eof()
    assert snapshot(got) == reference


def _split_everywhere(data: bytes, offsets: range) -> None:
    reference = snapshot(parse_all(data))
    for k in offsets:
        parser = AmiParser()
        got = parser.feed(data[:k]) + parser.feed(data[k:])
        parser.feed_eof()
        assert snapshot(got) == reference, f"split at byte {k}"


def test_every_split_offset_around_the_bare_lf(captures_dir: Path) -> None:
    """Every offset of a stream cut around the bare-LF reply (banner, the message before it and 3 after)."""
    data = load_stream(captures_dir, BARE_LF_STREAM).data
    at = data.index(b"No Contacts found\n")
    start = data.rfind(b"\r\n\r\n", 0, data.rfind(b"\r\n\r\n", 0, at)) + 4
    end = at
    for _ in range(4):
        end = data.index(b"\r\n\r\n", end) + 4
    banner_end = data.index(b"\r\n") + 2
    window = data[:banner_end] + data[start:end]
    assert len(parse_all(window)) == 5
    _split_everywhere(window, range(len(window) + 1))


@pytest.mark.parametrize("stream", STREAMS, ids=lambda s: s.name)
def test_split_offsets_with_a_stride_and_inside_terminators(stream: RecordedStream) -> None:
    data = stream.data
    _split_everywhere(data, range(0, len(data) + 1, len(data) // 50 + 1))
    terminators = [i for i in range(len(data)) if data.startswith(b"\r\n\r\n", i)][:12]
    for t in terminators:
        _split_everywhere(data, range(t, t + 5))


@pytest.mark.parametrize(
    "path_name", ["ami_actions_replies.txt.raw", "ami_actions_replies_after_calls.txt.raw"]
)
def test_recorded_action_replies_parse(captures_dir: Path, path_name: str) -> None:
    for exchange in load_exchanges(captures_dir / path_name):
        sent = AmiParser(expect_banner=False).feed(exchange.sent)
        assert [(m.kind, m.name) for m in sent] == [("action", exchange.action)]
        received = AmiParser(expect_banner=False).feed(exchange.received)
        assert received[0].kind == "response"
        assert received[0].action_id == sent[0].action_id
        if received[0].get("EventList") == "start":
            assert received[-1].get("EventList") == "Complete"
            assert all(m.kind == "event" and m.action_id == sent[0].action_id for m in received[1:])
        if exchange.action == "Command":
            assert (received[0].get("Output") or "").startswith("Asterisk GIT-22")


def test_lines_without_separator_go_to_the_body() -> None:
    data = (
        b"Response: Follows\r\nPrivilege: Command\r\nActionID: 7\r\n"
        b"Name/username             Host\r\nPeer:\r\n--END COMMAND--\r\n\r\n"
    )
    [msg] = AmiParser(expect_banner=False).feed(data)
    assert (msg.kind, msg.name, msg.action_id) == ("response", "Follows", "7")
    assert msg.body == ("Name/username             Host", "--END COMMAND--")
    assert msg.get("Peer") == ""


def test_kind_header_not_first_and_blank_lines_between_messages() -> None:
    parser = AmiParser(expect_banner=False)
    messages = parser.feed(b"\r\n\r\nActionID: 1\r\naction: Ping\r\n\r\n\r\nEvent: X\r\n\r\n")
    assert [(m.kind, m.name) for m in messages] == [("action", "Ping"), ("event", "X")]


def test_message_accessors() -> None:
    msg = AmiMessage([("Event", "Newchannel"), ("ChanVariable", "a=1"), ("chanvariable", "b=2")])
    assert msg.get_all("CHANVARIABLE") == ("a=1", "b=2")
    assert msg["chanVariable"] == "a=1"
    assert msg.get("Missing") is None and msg.get("Missing", "x") == "x"
    with pytest.raises(KeyError):
        msg["Missing"]
    with pytest.raises(AttributeError):
        msg.name = "other"
    assert msg == AmiMessage(list(msg.headers)) and hash(msg) == hash(AmiMessage(list(msg)))
    with pytest.raises(ValueError, match="Event, Response or Action"):
        AmiMessage([("Foo", "bar")])


def test_repr_hides_the_secret() -> None:
    [msg] = AmiParser(expect_banner=False).feed(encode_action("Login", {"Username": "u", "Secret": "s3cr3t"}))
    assert "s3cr3t" not in repr(msg)
    assert msg["Secret"] == "s3cr3t"


def test_unescape_c_on_recorded_fields(captures_dir: Path) -> None:
    messages = parse_all(load_stream(captures_dir, "ami_events_agi_record_and_vars.raw").data)
    name = next(m["CallerIDName"] for m in messages if "VIP" in (m.get("CallerIDName") or ""))
    assert name == 'Zoé \\\\\\"VIP\\\\\\" <Dupré>'
    assert unescape_c(name) == 'Zoé \\"VIP\\" <Dupré>'
    note = next(m for m in messages if m.name == "VarSet" and m.get("Variable") == "GUICHET_NOTE")
    assert unescape_c(note["Value"]) == 'Mme "X" rappel'
    accent = next(m for m in messages if m.name == "VarSet" and m.get("Variable") == "GUICHET_ACCENT")
    assert unescape_c(accent["Value"]) == "Zoé à l'accueil (près)"
    assert unescape_c("a\\tb\\n\\q\\") == "a\tb\n\\q\\"


# --- limits, garbage, EOF -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "limits", "match"),
    [
        (b"Event: X\r\nA: " + b"x" * 200 + b"\r\n\r\n", {"max_line_bytes": 100}, "line longer"),
        (b"Event: X\r\nA: " + b"x" * 200, {"max_line_bytes": 100}, "line longer"),
        (b"Event: X\r\n" + b"A: 1\r\n" * 10 + b"\r\n", {"max_headers": 5}, "more than 5"),
        (b"Event: X\r\n" + b"A: 1\r\n" * 300 + b"\r\n", {"max_message_bytes": 1000}, "larger than"),
        (b"Event: X\r\n" + b"A: 1\r\n" * 300, {"max_message_bytes": 1000}, "larger than"),
        (b"Event: X\r\nA: \x00\x01\x02\r\n\r\n", {}, "NUL"),
        (b"\x00\xff\xfe\x10garbage", {}, "NUL"),
        (b"hello world\r\nthis is not AMI\r\n\r\n", {}, "without Event, Response or Action"),
        (b"Foo: bar\r\n\r\n", {}, "without Event, Response or Action"),
    ],
)
def test_limits_and_garbage_raise_protocol_error(data: bytes, limits: dict[str, int], match: str) -> None:
    parser = AmiParser(expect_banner=False, **limits)
    with pytest.raises(AmiProtocolError, match=match):
        parser.feed(data)
    with pytest.raises(AmiProtocolError, match="already failed"):
        parser.feed(b"Event: Y\r\n\r\n")


def test_bad_banner_raises() -> None:
    with pytest.raises(AmiProtocolError, match="banner"):
        AmiParser().feed(b"SSH-2.0-OpenSSH_9.6\r\n")
    with pytest.raises(AmiProtocolError, match="banner"):
        AmiParser().feed(b"\xff" * 300)


def test_eof_mid_message_is_reported() -> None:
    parser = AmiParser()
    assert parser.feed(b"Asterisk Call Manager/11.0.0\r\nEvent: X\r\nA: 1\r\n") == []
    assert parser.buffered > 0
    with pytest.raises(AmiProtocolError, match="middle of a message"):
        parser.feed_eof()
    during_banner = AmiParser()
    during_banner.feed(b"Asterisk Call")
    with pytest.raises(AmiProtocolError):
        during_banner.feed_eof()
    clean = AmiParser()
    clean.feed(b"Asterisk Call Manager/11.0.0\r\nEvent: X\r\n\r\n")
    clean.feed_eof()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=64))
def test_random_bytes_never_hang_or_crash(data: bytes, chunk: int) -> None:
    parser = AmiParser(max_line_bytes=256, max_message_bytes=1024, max_headers=16)
    try:
        for i in range(0, len(data), chunk):
            for msg in parser.feed(data[i : i + chunk]):
                assert msg.kind in ("event", "response", "action")
        parser.feed_eof()
    except AmiProtocolError:
        pass


# --- encoding -------------------------------------------------------------------------------


def test_encode_action_layout() -> None:
    data = encode_action(
        "Originate",
        [("Channel", "Local/a@b"), ("Variable", "A=1"), ("Variable", "B=2"), ("Account", "")],
        action_id="cb-1",
    )
    assert data == (
        b"Action: Originate\r\nActionID: cb-1\r\nChannel: Local/a@b\r\n"
        b"Variable: A=1\r\nVariable: B=2\r\nAccount: \r\n\r\n"
    )
    assert (
        encode_message({"Response": "Success", "Ping": "Pong"}) == b"Response: Success\r\nPing: Pong\r\n\r\n"
    )
    with pytest.raises(ValueError, match="ActionID"):
        encode_action("Ping", {"ActionID": "x"}, action_id="y")


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ([("Action", "Originate"), ("CallerID", '"Evil"\r\nAction: Hangup\r\n\r\n <1>')], "CallerID"),
        ([("Action", "Setvar"), ("Value", "a\nb")], "Value"),
        ([("Action", "Setvar"), ("Value", "a\rb")], "Value"),
        ([("Action", "Ping"), ("Bad\r\nName", "x")], "header name"),
        ([("Action", "Ping"), ("Bad: Name", "x")], "header name"),
        ([("Action", "Ping"), ("", "x")], "header name"),
        ([], "at least one header"),
    ],
)
def test_encode_rejects_injection(headers: list[tuple[str, str]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_message(headers)


def test_encode_error_never_shows_a_secret() -> None:
    with pytest.raises(ValueError) as excinfo:
        encode_action("Login", [("Username", "ivr"), ("Secret", "top\r\nsecret")])
    assert "top" not in str(excinfo.value) and "Secret" in str(excinfo.value)


_NAMES = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1
)
_VALUES = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00"))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["Event", "Response", "Action"]), _VALUES, st.lists(st.tuples(_NAMES, _VALUES)))
def test_encode_parse_round_trip(kind_header: str, name: str, rest: list[tuple[str, str]]) -> None:
    headers = [(kind_header, name), *rest]
    [msg] = AmiParser(expect_banner=False).feed(encode_message(headers))
    assert list(msg.headers) == headers
    assert msg.name == name and msg.kind == kind_header.lower()
    assert msg.body == ()
