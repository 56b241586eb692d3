"""FastAGI codec tests on the real Asterisk 22 recordings (both sides of the protocol)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ivr.agi import (
    MAX_COMMAND_ARGS,
    MAX_COMMAND_BYTES,
    NEED_DATA,
    AgiClientConnection,
    AgiEnv,
    AgiServerConnection,
    Command,
    ConnectionClosed,
    EnvironmentReceived,
    HangupNotice,
    Reply,
    ServerEvent,
    encode_command,
    parse_command_line,
)
from ivr.errors import AgiProtocolError
from tests.agi_transcripts import Transcript, load_transcripts
from tests.conftest import captures_path

TRANSCRIPTS = load_transcripts(captures_path())
SESSIONS = [t for t in TRANSCRIPTS if not t.accepted_only]


def ok(line: str, result: int | None, data: str | None = None, endpos: int | None = None) -> Reply:
    """Expected reply for a ``200`` line; ``timeout`` is True exactly when data is 'timeout'."""
    result_text = line[len("200 result=") :].split(" ", 1)[0]
    return Reply(200, result, data, endpos, data == "timeout", line[4:], (), result_text)


def line_reply(line: str, code: int) -> Reply:
    return Reply(code, None, None, None, False, line[4:])


# Hand-written expectations for every reply line the recordings contain (plus a few from
# res_agi.c that the recordings do not show: GET DATA timeouts with/without digits, 520 alone).
_LINES: dict[str, Reply] = {
    "200 " + reply.text: reply
    for reply in [
        ok("200 result=-1", -1),
        ok("200 result=-1 endpos=0", -1, None, 0),
        ok("200 result=-2", -2),
        ok("200 result=0", 0),
        ok("200 result=0 (timeout) endpos=31920", 0, "timeout", 31920),
        ok("200 result=0 endpos=11234", 0, None, 11234),
        ok("200 result=0 endpos=3404", 0, None, 3404),
        ok("200 result=1", 1),
        ok('200 result=1 ("" <3902>)', 1, '"" <3902>'),
        ok('200 result=1 ("Agent Zoé" <3901>)', 1, '"Agent Zoé" <3901>'),
        ok(
            '200 result=1 ("Zoé \\"VIP\\" <Dupré>" <0612345678>)',
            1,
            '"Zoé \\"VIP\\" <Dupré>" <0612345678>',
        ),
        ok(
            '200 result=1 ("Zo\ufffd \\"VIP\\" <Dupr\ufffd>" <0612345678>)',
            1,
            '"Zo\ufffd \\"VIP\\" <Dupr\ufffd>" <0612345678>',
        ),
        ok("200 result=1 ()", 1, ""),
        ok("200 result=1 (0612345678)", 1, "0612345678"),
        ok("200 result=1 (1)", 1, "1"),
        ok("200 result=1 (1|0|0|1|0)", 1, "1|0|0|1|0"),
        ok("200 result=1 (2)", 1, "2"),
        ok("200 result=1 (5)", 1, "5"),
        ok("200 result=1 (Agent Zoé|3901)", 1, "Agent Zoé|3901"),
        ok("200 result=1 (JOINEMPTY)", 1, "JOINEMPTY"),
        ok('200 result=1 (Mme "X" rappel)', 1, 'Mme "X" rappel'),
        ok("200 result=1 (PJSIP/sipp-00000000|5551234|bar)", 1, "PJSIP/sipp-00000000|5551234|bar"),
        ok("200 result=1 (TIMEOUT)", 1, "TIMEOUT"),
        ok('200 result=1 (Zoé \\"VIP\\" <Dupré>)', 1, 'Zoé \\"VIP\\" <Dupré>'),
        ok("200 result=1 (Zoé à l'accueil (près))", 1, "Zoé à l'accueil (près)"),
        ok('200 result=1 (Zo\ufffd \\"VIP\\" <Dupr\ufffd>)', 1, 'Zo\ufffd \\"VIP\\" <Dupr\ufffd>'),
        ok("200 result=1 (bar)", 1, "bar"),
        ok("200 result=1 (baz qux)", 1, "baz qux"),
        ok("200 result=1 (queue-exit|1|2||)", 1, "queue-exit|1|2||"),
        ok("200 result=1 (valeur avec espaces é)", 1, "valeur avec espaces é"),
        ok("200 result=1 (value1)", 1, "value1"),
        ok("200 result=50 endpos=20640", 50, None, 20640),
        ok("200 result=6", 6),
        # not in the recordings, shapes written by res_agi.c:
        ok("200 result= (timeout)", None, "timeout"),
        ok("200 result=0612 (timeout)", 612, "timeout"),
        ok("200 result=12* (timeout)", None, "timeout"),
        ok("200 result=1 (timeout)", 1, "timeout"),
        ok("200 result=1 (a) endpos=3) x)", 1, "a) endpos=3) x"),
        ok("200 result=1 (x endpos=5)", 1, "x endpos=5"),
        ok("200 result=-1 (hangup) endpos=160", -1, "hangup", 160),
    ]
}
_LINES["510 Invalid or unknown command"] = line_reply("510 Invalid or unknown command", 510)
_LINES["511 Command Not Permitted on a dead channel or intercept routine"] = line_reply(
    "511 Command Not Permitted on a dead channel or intercept routine", 511
)
_LINES["520 Invalid command syntax.  Proper usage not available."] = line_reply(
    "520 Invalid command syntax.  Proper usage not available.", 520
)
_USAGE_HEAD = "520-Invalid command syntax.  Proper usage follows:"
_USAGE_END = "520 End of proper usage."


def expected_events(reply_lines: list[str]) -> list[ServerEvent]:
    """Expected events for the lines Asterisk wrote after one command."""
    if reply_lines and reply_lines[0] == _USAGE_HEAD:
        assert reply_lines[-1] == _USAGE_END
        usage = tuple(reply_lines[1:-1])
        return [Reply(520, None, None, None, False, _USAGE_HEAD[4:], usage)]
    return [HangupNotice() if line == "HANGUP" else _LINES[line] for line in reply_lines]


def transcript_events(t: Transcript, env: AgiEnv) -> list[ServerEvent]:
    events: list[ServerEvent] = [EnvironmentReceived(env)]
    for _, replies in t.exchanges:
        events += expected_events(replies)
    events += [HangupNotice() for line in t.trailing_lines if line == "HANGUP"]
    return [*events, ConnectionClosed()]


def engine_for(t: Transcript) -> AgiServerConnection:
    conn = AgiServerConnection()
    for command, _ in t.exchanges:
        conn.send_command(*parse_command_line(command))
    return conn


def drain(conn: AgiServerConnection, out: list[ServerEvent]) -> None:
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
        if isinstance(event, ConnectionClosed):
            return


def feed(t: Transcript, chunks: list[bytes]) -> list[ServerEvent]:
    conn = engine_for(t)
    events: list[ServerEvent] = []
    for chunk in [*(c for c in chunks if c), b""]:
        conn.receive_data(chunk)
        drain(conn, events)
    return events


def env_from_text(t: Transcript) -> AgiEnv:
    """The environment as written in the file, split by hand (independent of the codec)."""
    pairs = []
    for line in t.env_bytes.decode("utf-8").split("\n"):
        if line:
            key, value = line.split(": ", 1)
            pairs.append((key.removeprefix("agi_"), value))
    return AgiEnv(tuple(pairs))


# ------------------------------------------------------------------ transcripts (engine side)
def test_every_transcript_is_loaded(captures_dir: Path) -> None:
    names = {t.name for t in load_transcripts(captures_dir)}
    assert len(names) == 11
    assert "agi_test_1" in names
    assert "agi_agi_server_down_stall_12" in names
    accept_close = next(t for t in TRANSCRIPTS if t.name.endswith("accept-close_10"))
    assert accept_close.accepted_only
    stall = next(t for t in TRANSCRIPTS if t.name.endswith("stall_12"))
    assert stall.trailing_lines == ["HANGUP", "HANGUP"]
    assert stall.asterisk_eof


def test_every_recorded_reply_has_an_expectation() -> None:
    for t in SESSIONS:
        for command, replies in t.exchanges:
            assert replies, f"{t.name}: {command} has no reply"
            expected_events(replies)  # raises KeyError for an unknown line


@pytest.mark.parametrize("t", SESSIONS, ids=lambda t: t.name)
def test_transcript_parses_into_expected_events(t: Transcript) -> None:
    assert feed(t, [t.asterisk_bytes()]) == transcript_events(t, env_from_text(t))


@pytest.mark.parametrize("t", SESSIONS, ids=lambda t: t.name)
def test_transcript_split_at_every_offset(t: Transcript) -> None:
    data = t.asterisk_bytes()
    whole = feed(t, [data])
    for i in range(len(data) + 1):
        assert feed(t, [data[:i], data[i:]]) == whole, f"split at {i}"
    assert feed(t, [data[i : i + 1] for i in range(len(data))]) == whole


def test_environment_typed_properties() -> None:
    by_name = {t.name: feed(t, [t.env_bytes])[0] for t in SESSIONS}
    env = by_name["agi_test_1"]
    assert isinstance(env, EnvironmentReceived)
    e = env.env
    assert (e.channel, e.uniqueid, e.callerid, e.calleridname) == (
        "PJSIP/sipp-00000000",
        "1795869006.0",
        "5551234",
        "SIPp Caller",
    )
    assert (e.dnid, e.context, e.extension, e.priority) == ("100", "from-sipp", "100", "3")
    assert (e.network_script, e.request, e.language) == ("test", "agi://127.0.0.1:4573/test", "en")
    assert e.args == ("arg1", "arg two")
    assert e["accountcode"] == ""
    assert len(e) == 24
    expected_args = {
        "agi_exit_with_digit_callback-offer_1": ("", "1"),
        "agi_queue_timeout_overflow_overflow_1": ("TIMEOUT", "1", "5", "ovf"),
        "agi_queue_timeout_overflow_joinempty_overflow_2": ("JOINEMPTY", "", "", "ovfne"),
        "agi_agi-hangup_2": (),
    }
    for name, args in expected_args.items():
        event = by_name[name]
        assert isinstance(event, EnvironmentReceived)
        assert event.env.args == args
    names = {
        "agi_agi_record_and_vars_recvars_3": 'Zoé \\"VIP\\" <Dupré>',
        "agi_agi_record_and_vars_names_4": 'Zo\ufffd \\"VIP\\" <Dupr\ufffd>',
    }
    for name, caller in names.items():
        event = by_name[name]
        assert isinstance(event, EnvironmentReceived)
        assert event.env.calleridname == caller


def test_env_is_frozen_and_hashable() -> None:
    env = AgiEnv.of({"agi_channel": "PJSIP/a", "arg_1": "x"})
    assert env.channel == "PJSIP/a"
    assert env.args == ("x",)
    assert env == AgiEnv((("channel", "PJSIP/a"), ("arg_1", "x")))
    assert hash(env) == hash(AgiEnv((("channel", "PJSIP/a"), ("arg_1", "x"))))
    with pytest.raises(AttributeError):
        env.pairs = ()  # type: ignore[misc]
    assert env.dnid == ""


def test_invalid_utf8_is_replaced() -> None:
    conn = AgiServerConnection()
    conn.receive_data(b"agi_calleridname: Zo\xe9\n\n")
    event = conn.next_event()
    assert isinstance(event, EnvironmentReceived)
    assert event.env.calleridname == "Zo\ufffd"


# ------------------------------------------------------------------ commands (Asterisk side)
# The words the engine meant, written by hand for every recorded line with quotes or escapes.
_MEANT: dict[str, tuple[str, ...]] = {
    'DATABASE PUT guichet note "valeur avec espaces é"': (
        "DATABASE",
        "PUT",
        "guichet",
        "note",
        "valeur avec espaces é",
    ),
    'EXEC Set "BAR=baz qux"': ("EXEC", "Set", "BAR=baz qux"),
    'GET FULL VARIABLE "${CALLERID(all)}"': ("GET", "FULL", "VARIABLE", "${CALLERID(all)}"),
    'GET FULL VARIABLE "${CALLERID(name)}|${CALLERID(num)}"': (
        "GET",
        "FULL",
        "VARIABLE",
        "${CALLERID(name)}|${CALLERID(num)}",
    ),
    'RECORD FILE /tmp/rec-1795869929.26 wav "#" 4000 0 s=2': (
        "RECORD",
        "FILE",
        "/tmp/rec-1795869929.26",
        "wav",
        "#",
        "4000",
        "0",
        "s=2",
    ),
    'SAY DIGITS 42 ""': ("SAY", "DIGITS", "42", ""),
    'SET CALLERID "\\"Agent Zoé\\" <3901>"': ("SET", "CALLERID", '"Agent Zoé" <3901>'),
    'SET VARIABLE GUICHET_ACCENT "Zoé à l\'accueil (près)"': (
        "SET",
        "VARIABLE",
        "GUICHET_ACCENT",
        "Zoé à l'accueil (près)",
    ),
    'SET VARIABLE GUICHET_NOTE "Mme \\"X\\" rappel"': ("SET", "VARIABLE", "GUICHET_NOTE", 'Mme "X" rappel'),
    # the unquoted form: six words, hence Asterisk's 520 in the recording
    'SET VARIABLE GUICHET_RAW Mme "X" rappel': ("SET", "VARIABLE", "GUICHET_RAW", "Mme", "X", "rappel"),
    'STREAM FILE beep ""': ("STREAM", "FILE", "beep", ""),
    'STREAM FILE tt-monkeys "0123456789*#"': ("STREAM", "FILE", "tt-monkeys", "0123456789*#"),
    'VERBOSE "msg with spaces and \\"quotes\\" é" 1': ("VERBOSE", 'msg with spaces and "quotes" é', "1"),
    'VERBOSE "hello from fastagi" 1': ("VERBOSE", "hello from fastagi", "1"),
}

RECORDED_COMMANDS = sorted({command for t in SESSIONS for command, _ in t.exchanges})


def meant(line: str) -> tuple[str, ...]:
    if line in _MEANT:
        return _MEANT[line]
    if line.endswith(' ""') and line.count('"') == 2:
        return (*line[:-3].split(" "), "")
    if line.startswith('VERBOSE "') and line.endswith('" 1') and line.count('"') == 2:
        return ("VERBOSE", line[9:-3], "1")
    if '"' in line or "\\" in line:
        inner = line.split(" ", 3)[3]
        assert line.startswith("GET FULL VARIABLE ") and inner[0] == inner[-1] == '"', line
        return ("GET", "FULL", "VARIABLE", inner[1:-1])
    return tuple(line.split(" "))


@pytest.mark.parametrize("line", RECORDED_COMMANDS)
def test_recorded_command_parses_into_meant_words(line: str) -> None:
    client = AgiClientConnection()
    client.receive_data(line.encode() + b"\n")
    assert client.next_command() == Command(meant(line), line)
    assert client.next_command() is NEED_DATA
    assert parse_command_line(encode_command(*meant(line)).decode()[:-1]) == meant(line)


def test_quoted_note_matches_the_form_asterisk_accepted() -> None:
    assert encode_command("SET", "VARIABLE", "GUICHET_NOTE", 'Mme "X" rappel') == (
        b'SET VARIABLE GUICHET_NOTE "Mme \\"X\\" rappel"\n'
    )
    assert encode_command("STREAM", "FILE", "beep", "") == b'STREAM FILE beep ""\n'
    assert encode_command("ANSWER") == b"ANSWER\n"


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("a\\ b", ("a b",)),
        ('"a"b', ("ab",)),
        ('ab"c d"', ("abc d",)),
        ('x "unterminated quote', ("x", "unterminated quote")),
        ("trailing\\", ("trailing",)),
        ("tab\tsep  two  spaces ", ("tab", "sep", "two", "spaces")),
        ('\\"x', ('"x',)),
        ('"\\\\"', ("\\",)),
        ("\\n", ("n",)),
        ('"" ""', ("", "")),
        ("a \\ b", ("a", " b")),
        ("", ()),
    ],
)
def test_parse_args_corner_cases(line: str, words: tuple[str, ...]) -> None:
    assert parse_command_line(line) == words


def test_parse_args_keeps_127_words() -> None:
    assert len(parse_command_line(" ".join(["w"] * 200))) == MAX_COMMAND_ARGS
    assert len(parse_command_line(" ".join(['"w"'] * 200))) == MAX_COMMAND_ARGS


_ARG = st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=["Cs"]), max_size=40)


@given(name=st.from_regex(r"\A[A-Z]{1,10}\Z"), args=st.lists(_ARG, max_size=8))
@example(name="SET", args=["VARIABLE", "X", 'Mme "X" rappel'])
@example(name="VERBOSE", args=['"', "\\", '\\"', "", " ", "\t", 'a" ; HANGUP', "Zoé \\"])
@example(name="EXEC", args=['"' * 5, "\\" * 5, "é" * 10])
def test_quoting_round_trip(name: str, args: list[str]) -> None:
    words = (name, *args)
    try:
        data = encode_command(*words)
    except ValueError:
        assert len(" ".join(words).encode()) > MAX_COMMAND_BYTES // 2 or name.lower().startswith("failure")
        return
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    client = AgiClientConnection()
    client.receive_data(data)
    command = client.next_command()
    assert isinstance(command, Command)
    assert command.words == words
    assert client.next_command() is NEED_DATA


def test_lone_surrogate_rejected() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        encode_command("VERBOSE", "a\udce9")


@pytest.mark.parametrize("bad", ["a\nHANGUP", "a\r", "\x00", "x\r\nEXEC System rm"])
def test_cr_lf_nul_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="CR, LF and NUL"):
        encode_command("SET", "VARIABLE", "X", bad)


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ((), "at least one word"),
        (("GET VARIABLE", "X"), "separately"),
        (("",), "separately"),
        (("VERBOSE", "x" * MAX_COMMAND_BYTES), "2047"),
        (("NOOP", *["x"] * MAX_COMMAND_ARGS), "127"),
        (("FAILURE",), "failure"),
    ],
)
def test_bad_commands_rejected(words: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_command(*words)


def test_longest_command_fits_asterisk_buffer() -> None:
    data = encode_command("VERBOSE", "x" * (MAX_COMMAND_BYTES - len("VERBOSE \n")))
    assert len(data) == MAX_COMMAND_BYTES
    client = AgiClientConnection()
    client.receive_data(data)
    assert isinstance(client.next_command(), Command)


# ------------------------------------------------------------------ Asterisk side writes
@pytest.mark.parametrize("t", SESSIONS, ids=lambda t: t.name)
def test_environment_block_reproduces_recorded_bytes(t: Transcript) -> None:
    env = env_from_text(t)
    assert AgiClientConnection.environment_block(env.pairs) == t.env_bytes
    prefixed = {"agi_" + k: v for k, v in env.pairs}
    assert AgiClientConnection.environment_block(prefixed) == t.env_bytes


def test_format_reply_reproduces_every_reply_line() -> None:
    for line, reply in _LINES.items():
        if reply.code == 200:
            data = AgiClientConnection.format_reply(200, reply.result_text, reply.data, reply.endpos)
        else:
            data = AgiClientConnection.format_reply(reply.code, text=reply.text)
        assert data == line.encode() + b"\n"
    assert AgiClientConnection.format_reply(510) == b"510 Invalid or unknown command\n"
    assert AgiClientConnection.format_reply(511) == (
        b"511 Command Not Permitted on a dead channel or intercept routine\n"
    )
    assert AgiClientConnection.hangup_notice() == b"HANGUP\n"


def test_usage_reply_reproduces_recorded_block() -> None:
    blocks = [r for t in SESSIONS for _, r in t.exchanges if r[0] == _USAGE_HEAD]
    assert len(blocks) == 2
    for block in blocks:
        assert AgiClientConnection.usage_reply(block[1:-1]) == "".join(x + "\n" for x in block).encode()


@pytest.mark.parametrize(
    "call",
    [
        lambda: AgiClientConnection.format_reply(200),
        lambda: AgiClientConnection.format_reply(200, 1, "a\nb"),
        lambda: AgiClientConnection.format_reply(599),
        lambda: AgiClientConnection.format_reply(510, 1),
        lambda: AgiClientConnection.environment_block({"channel": "a\nagi_x: y"}),
        lambda: AgiClientConnection.usage_reply(["a\n520 End"]),
    ],
)
def test_asterisk_side_rejects_bad_input(call: object) -> None:
    assert callable(call)
    with pytest.raises(ValueError):
        call()


def test_client_side_eof_and_limits() -> None:
    client = AgiClientConnection()
    client.receive_data(b"ANSWER\nGET VAR")
    assert client.next_command() == Command(("ANSWER",), "ANSWER")
    assert client.next_command() is NEED_DATA
    client.receive_data(b"")
    with pytest.raises(AgiProtocolError, match="EOF"):
        client.next_command()
    client = AgiClientConnection()
    client.receive_data(b"x" * MAX_COMMAND_BYTES)
    with pytest.raises(AgiProtocolError, match="longer"):
        client.next_command()
    client = AgiClientConnection()
    client.receive_data(b"VERBOSE a\x00b 1\n")
    with pytest.raises(AgiProtocolError, match="NUL"):
        client.next_command()
    client = AgiClientConnection()
    client.receive_data(b"")
    assert client.next_command() == ConnectionClosed()
    assert client.next_command() == ConnectionClosed()


# ------------------------------------------------------------------ engine side errors
ENV = b"agi_network_script: test\nagi_channel: PJSIP/x\n\n"


def engine(data: bytes, *, commands: int = 1, eof: bool = False, **limits: int) -> AgiServerConnection:
    conn = AgiServerConnection(**limits)
    for _ in range(commands):
        conn.send_command("NOOP")
    if data:
        conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    return conn


def events_until_error(conn: AgiServerConnection) -> list[ServerEvent]:
    out: list[ServerEvent] = []
    drain(conn, out)
    return out


@pytest.mark.parametrize(
    ("data", "eof", "limits", "message"),
    [
        (b"GET / HTTP/1.1\r\n", False, {}, "not an AGI environment block"),
        (b"agi_x: 1\nbad line\n\n", False, {}, "malformed environment line"),
        (b"agi_x: 1\nagi_x: 2\n\n", False, {}, "duplicate"),
        (b"agi_: 1\n\n", False, {}, "malformed"),
        (b"agi_channel: x\n", True, {}, "EOF inside the environment block"),
        (b"agi_chan", True, {}, "EOF inside the environment block"),
        (b"agi_x: " + b"y" * 17000, False, {}, "environment block larger"),
        (b"agi_x: " + b"y" * 100, False, {"max_env_bytes": 64}, "environment block larger"),
        (b"".join(b"agi_%d: y\n" % i for i in range(10)), False, {"max_env_bytes": 64}, "block larger"),
        (b"".join(b"agi_%d: y\n" % i for i in range(20)), False, {"max_env_lines": 10}, "more than 10"),
        (ENV + b"200 result=0\n200 result=0\n", False, {}, "answers no command"),
        (ENV + b"201 what\n" + b"garbage\n", False, {}, "malformed reply"),
        (ENV + b"20x result=0\n", False, {}, "malformed reply"),
        (ENV + b"520-Invalid\nusage\n", True, {}, "EOF inside a multi-line 520"),
        (ENV + b"520-Invalid\n" + b"u\n" * 70, False, {}, "longer than 64 lines"),
        (ENV + b"200 result=" + b"1" * 9000, False, {}, "line longer"),
        (ENV + b"200 res", True, {}, "EOF in the middle of a line"),
    ],
)
def test_engine_rejects_garbage(data: bytes, eof: bool, limits: dict[str, int], message: str) -> None:
    conn = engine(data, eof=eof, **limits)
    with pytest.raises(AgiProtocolError, match=message):
        events_until_error(conn)
    with pytest.raises(AgiProtocolError):  # the error is sticky
        conn.next_event()


def test_over_long_line_fails_before_eof() -> None:
    conn = AgiServerConnection(max_line=100)
    conn.receive_data(ENV)
    assert isinstance(conn.next_event(), EnvironmentReceived)
    conn.send_command("NOOP")
    fed = 0
    with pytest.raises(AgiProtocolError, match="line longer than 100"):
        while True:
            conn.receive_data(b"x" * 30)
            fed += 30
            assert conn.next_event() is NEED_DATA
            assert fed <= 100, "no error once the line passed the limit"


def test_eof_at_boundaries_gives_connection_closed() -> None:
    assert events_until_error(engine(b"", eof=True)) == [ConnectionClosed()]
    events = events_until_error(engine(ENV + b"HANGUP\n", eof=True))
    assert events[1:] == [HangupNotice(), ConnectionClosed()]
    conn = engine(ENV, eof=True)
    events_until_error(conn)
    assert conn.next_event() == ConnectionClosed()
    with pytest.raises(RuntimeError):
        conn.receive_data(b"more")


def test_reply_while_hangup_twice() -> None:
    events = events_until_error(engine(ENV + b"HANGUP\nHANGUP\n200 result=0\n", eof=True))
    assert events[1:] == [HangupNotice(), HangupNotice(), _LINES["200 result=0"], ConnectionClosed()]
