"""The ``guichet`` command: ``serve``, ``demo``, ``menus check``, ``prompts build``, ``asterisk-config``,
``users add``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from redis.exceptions import RedisError

from desk.auth import ROLES, add_user
from guichet import asterisk_conf
from guichet.config import ConfigError, Settings, load_settings
from guichet.demo import DemoOptions, run_demo
from guichet.engine import Engine, set_event_loop_policy
from ivr import menu_check, prompts
from ivr.menu_engine import ENGINE_PROMPTS
from routing.errors import AmiAuthError, AmiConnectionLost

logger = logging.getLogger("guichet")


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guichet", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the engine against a real Asterisk 22")
    serve.add_argument("--config", type=Path, help="TOML configuration file (default: embedded defaults)")

    menus = commands.add_parser("menus", help="voice menu files: `guichet menus check [DIR]`")
    menus.add_argument("action", choices=["check"], help="check: report every error, file:line: key: message")
    menus.add_argument("args", nargs=argparse.REMAINDER, help="see `guichet menus check --help`")

    build = commands.add_parser("prompts", help="voice prompts: `guichet prompts build [MENU_DIR] --out DIR`")
    build.add_argument("action", choices=["build"], help="build: synthesise every text (espeak-ng + sox)")
    build.add_argument("args", nargs=argparse.REMAINDER, help="see `guichet prompts build --help`")

    conf = commands.add_parser("asterisk-config", help="write a complete Asterisk 22 configuration")
    conf.add_argument("args", nargs=argparse.REMAINDER, help="see `guichet asterisk-config --help`")

    users = commands.add_parser("users", help="web users: `guichet users add LOGIN --role ROLE`")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    add = users_commands.add_parser(
        "add", help="add or replace a web user; the password is read from a prompt or stdin (never argv)"
    )
    add.add_argument("login")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--agent", help="the agent id ([agents.<id>]) an agent user acts as")
    add.add_argument("--config", type=Path, help="TOML configuration file: its [http] users_file and agents")
    add.add_argument("--file", type=Path, help="the users file (default: [http] users_file)")

    demo = commands.add_parser("demo", help="run the engine against the simulated PBX, callers and agents")
    defaults = DemoOptions()
    demo.add_argument("--speed", type=_positive, default=defaults.speed, help="simulated time factor")
    demo.add_argument("--calls", type=_count, help="stop after this many calls (default: until Ctrl-C)")
    demo.add_argument("--duration", type=_positive, help="stop placing calls after this many real seconds")
    demo.add_argument(
        "--rate", type=_positive, default=defaults.rate_per_min, help="calls per simulated minute"
    )
    demo.add_argument("--agents", type=_count, default=defaults.agents, help="simulated agents (1-4)")
    demo.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of the callers' and agents' draws"
    )
    demo.add_argument("--summary-every", type=_positive, default=defaults.summary_every_s, help="seconds")
    demo.add_argument("--agi-port", type=int, default=defaults.agi_port, help="FastAGI port (0: a free one)")
    return parser


def read_password(stdin: TextIO) -> str:
    """From a prompt (typed twice) on a terminal, else the first line of stdin."""
    if stdin.isatty():
        password = getpass.getpass("Mot de passe : ")
        if getpass.getpass("Mot de passe (encore) : ") != password:
            raise ValueError("the two passwords differ")
        return password
    return stdin.readline().rstrip("\r\n")


def users_add(args: argparse.Namespace, stdin: TextIO) -> int:
    settings = load_settings(args.config)
    path = args.file or (Path(settings.http.users_file) if settings.http.users_file else None)
    if path is None:
        raise ConfigError(f"{settings.source}: no users file: set [http] users_file or pass --file")
    if args.agent is not None and args.agent not in settings.agents:
        raise ConfigError(f"{settings.source}: --agent {args.agent}: no [agents.{args.agent}]")
    try:
        add_user(path, args.login, args.role, args.agent, read_password(stdin))
    except ValueError as exc:
        print(f"guichet users add: {exc}", file=sys.stderr)
        return 2
    print(f"{args.login} ({args.role}) written to {path}")
    return 0


async def serve(settings: Settings) -> None:
    engine = Engine(settings, settings.ami_secret())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await engine.start()
        for line in engine.addresses():
            logger.info("%s", line)
        await stop.wait()  # until SIGTERM (or Ctrl-C, which cancels us)
        logger.info("SIGTERM: stopping")
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        await engine.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # `asterisk-config` hands every option to its own parser (argparse.REMAINDER alone stops at "--out").
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "asterisk-config":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if args.command == "serve" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "menus":
            return menu_check.main(args.args)
        if args.command == "prompts":
            return prompts.main(args.args, extra_texts=[p.text for p in ENGINE_PROMPTS.values()])
        if args.command == "asterisk-config":
            return asterisk_conf.main([*unknown, *args.args])
        if args.command == "users":
            return users_add(args, sys.stdin)
        if args.command == "serve":
            settings = load_settings(args.config)
            settings.ami_secret()  # fail fast, before anything listens
            set_event_loop_policy(settings)
            asyncio.run(serve(settings))
        else:
            if not 1 <= args.agents <= 4:
                raise ConfigError(f"--agents: the demo has 1 to 4 agents, not {args.agents}")
            options = DemoOptions(
                speed=args.speed,
                calls=args.calls,
                duration_s=args.duration,
                rate_per_min=args.rate,
                agents=args.agents,
                seed=args.seed,
                summary_every_s=args.summary_every,
                agi_port=args.agi_port,
            )
            set_event_loop_policy(load_settings(None))
            asyncio.run(run_demo(options, sys.stdout))
    except ConfigError as exc:
        print(f"guichet: configuration error: {exc}", file=sys.stderr)
        return 2
    except (AmiAuthError, AmiConnectionLost) as exc:
        print(f"guichet: cannot log in to the AMI: {exc}", file=sys.stderr)
        return 1
    except RedisError as exc:
        print(f"guichet: cannot reach the live state store (Redis): {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a port already taken, Asterisk unreachable...
        print(f"guichet: cannot listen or connect: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("guichet: stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
