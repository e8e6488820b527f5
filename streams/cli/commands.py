"""Herald's own commands, joined to Faust's CLI: `dev`, `gateway`, `publish`, `users upsert`, `token`."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import click
import uvloop
import yaml
from aiokafka.errors import KafkaError

from kernel.errors import BrokerError, ConfigurationError, InvalidInput
from kernel.settings import Settings
from kernel.topics import TopicNames
from schemas.preferences import SOURCE_HEADER, PreferenceSource
from streams.cli.consent import json_lines as change_lines
from streams.cli.consent import read_history
from streams.cli.consent import table as change_table
from streams.cli.preference_args import build_update
from streams.cli.publishing import event_records, parse_events, parse_profiles, produce, profile_records
from streams.cli.trace import DEFAULT_SINCE, TraceQuery, json_lines, parse_moment, read_trace, table
from streams.routing.rendering import TemplateStore, check_templates
from streams.routing.rules import RuleBook
from streams.runtime.provisioning import provision_topics
from streams.state.rules_feed import RULESET_KEY, read_published

LISTEN_TOKEN_ENV = "HERALD_LISTEN_TOKEN"  # noqa: S105 — the variable's name, not a token


def listen_token(token_file: TextIO | None, environ: Mapping[str, str]) -> str:
    """`herald listen`'s token: the file's content if one is given, else the environment variable's."""
    text = token_file.read() if token_file is not None else environ.get(LISTEN_TOKEN_ENV, "")
    if not text.strip():
        where = f"{token_file.name} is empty" if token_file is not None else f"${LISTEN_TOKEN_ENV} is not set"
        raise click.UsageError(f"no token: {where}; set ${LISTEN_TOKEN_ENV} or pass --token-file FILE")
    return text.strip()


def _read(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot read {source}: {exc.strerror}") from None


async def _provision_then(
    settings: Settings,
    topic: str,
    records: list[tuple[bytes, bytes]],
    headers: tuple[tuple[str, bytes], ...] = (),
) -> int:
    # Create the topics first, or the broker's auto-creation would pick its own partition count.
    await provision_topics(settings)
    return await produce(settings.bootstrap_servers, topic, records, headers)


def register_commands(settings: Settings) -> None:
    from faust.cli.faust import cli

    names = TopicNames.from_settings(settings)

    def publish_file(
        source: str, topic: str, records: Callable[[str], list[tuple[bytes, bytes]]], what: str
    ) -> None:
        """Validate every record of the file first; send all of them, or none."""
        try:
            parsed = records(_read(source))
        except InvalidInput as exc:
            raise click.ClickException(f"nothing sent: {exc}") from None
        count = asyncio.run(_provision_then(settings, topic, parsed))
        click.echo(f"published {count} {what} to {topic}")

    @cli.command(name="publish")
    @click.argument("source", metavar="FILE|-")
    def publish(source: str) -> None:
        """Validate domain events (JSON, a JSON array or JSON lines) and publish them to the events topic."""
        publish_file(source, names.events, lambda text: event_records(parse_events(text)), "event(s)")

    @cli.group(name="users")
    def users() -> None:
        """The user directory."""

    @users.command(name="upsert")
    @click.argument("source", metavar="FILE|-")
    def upsert(source: str) -> None:
        """Validate user profiles (whole or partial) and publish them to the users topic."""
        publish_file(source, names.users, lambda text: profile_records(parse_profiles(text)), "profile(s)")

    @cli.group(name="preferences")
    def preferences() -> None:
        """User preferences: mute, opt-outs per category and channel, quiet hours."""

    @preferences.command(name="set")
    @click.argument("user_id")
    @click.option("--mute/--unmute", default=None, help="Mute every non-critical notification, or lift it.")
    @click.option(
        "--opt-out", multiple=True, metavar="CATEGORY:CHANNEL", help="e.g. marketing:email, or *:sms"
    )
    @click.option("--opt-in", multiple=True, metavar="CATEGORY:CHANNEL", help="Undo an opt-out.")
    @click.option("--quiet", multiple=True, metavar="DAYS=HH:MM-HH:MM", help="e.g. weekdays=22:00-07:00")
    @click.option("--no-quiet", multiple=True, metavar="DAYS", help="Remove the quiet hours of these days.")
    def preferences_set(
        user_id: str,
        mute: bool | None,
        opt_out: tuple[str, ...],
        opt_in: tuple[str, ...],
        quiet: tuple[str, ...],
        no_quiet: tuple[str, ...],
    ) -> None:
        """Change a user's preferences; what is not named stays as it is."""
        try:
            update = build_update(
                user_id, mute=mute, opt_out=opt_out, opt_in=opt_in, quiet=quiet, no_quiet=no_quiet
            )
        except InvalidInput as exc:
            raise click.ClickException(f"nothing sent: {exc}") from None
        records = [(user_id.encode(), update.to_json())]
        # The source goes with the change: the worker records it in the preferences history.
        source = ((SOURCE_HEADER, PreferenceSource.CLI.value.encode()),)
        asyncio.run(_provision_then(settings, names.preferences, records, source))
        click.echo(f"published preferences of {user_id} to {names.preferences}")

    @preferences.command(name="history")
    @click.argument("user_id")
    @click.option(
        "--since",
        metavar="WHEN",
        help="Only changes from then: a duration ago (30d) or a time (2026-11-30T09:00:00Z) "
        "[default: all the history topic keeps].",
    )
    @click.option("--json", "as_json", is_flag=True, help="JSON lines, one change per line as on the wire.")
    def preferences_history(user_id: str, since: str | None, as_json: bool) -> None:
        """Print every change of a user's preferences, newest last: when, from where (cli,
        preference_center, unsubscribe) and what it asked for. Reads only the user's partition of the
        preferences history topic. Exits with 1 when there is none, 2 when the broker could not be read."""
        try:
            start = None if since is None else parse_moment(since, datetime.now(UTC))
        except InvalidInput as exc:
            raise click.UsageError(str(exc)) from None
        topic = names.preferences_history
        try:
            found = asyncio.run(read_history(settings.bootstrap_servers, topic, user_id, start))
        except (BrokerError, KafkaError) as exc:
            failure = click.ClickException(f"cannot read {topic}: {exc}")
            failure.exit_code = 2  # 1 says that there was no change
            raise failure from None
        if found.unreadable:
            click.echo(f"{found.unreadable} record(s) of {user_id} are not changes; left out", err=True)
        if not found.changes:
            since_text = "" if start is None else f" since {start:%Y-%m-%d %H:%M:%S} UTC"
            click.echo(f"no preference changes of {user_id}{since_text} on {topic}", err=True)
            raise SystemExit(1)
        click.echo(change_lines(found.changes) if as_json else change_table(found.changes), nl=False)

    @cli.group(name="rules")
    def rules() -> None:
        """Routing rules, published to the rules topic and followed by every worker."""

    @rules.command(name="apply")
    @click.argument("source", metavar="FILE|-")
    def rules_apply(source: str) -> None:
        """Validate a rules file (YAML) whole and publish it; nothing is published if any of it is wrong."""
        try:
            book = RuleBook.from_yaml(_read(source))
        except ValueError as exc:
            raise click.ClickException(f"nothing published: {exc}") from None
        if settings.templates_dir.is_dir():
            try:
                check_templates(book.rules, TemplateStore(settings.templates_dir))
            except ValueError as exc:
                raise click.ClickException(
                    f"nothing published: {exc} (in {settings.templates_dir})"
                ) from None
        records = [(RULESET_KEY, book.to_ruleset().to_json())]
        asyncio.run(_provision_then(settings, names.rules, records))
        click.echo(f"published {len(book.rules)} rule(s) to {names.rules}")

    @rules.command(name="list")
    def rules_list() -> None:
        """Show the rules in force (the newest published ruleset)."""
        published = asyncio.run(read_published(settings.bootstrap_servers, names.rules))
        if published is None:
            click.echo(f"no rules published to {names.rules}; workers use {settings.rules_file}")
            return
        raw, offset = published
        document = RuleBook.from_json(raw).to_ruleset().model_dump(mode="json", exclude_none=True)
        click.echo(f"# in force since offset {offset} of {names.rules}")
        click.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), nl=False)

    @cli.command(name="trace")
    @click.argument("event_id", required=False)
    @click.option(
        "--user", "user_id", metavar="USER_ID", help="A user's statuses (of every event, or of EVENT_ID)."
    )
    @click.option(
        "--since",
        metavar="WHEN",
        default=DEFAULT_SINCE,
        show_default=True,
        help="Start of the range: a duration ago (15m, 1h, 2d) or a time (2026-11-30T09:00:00Z).",
    )
    @click.option("--until", metavar="WHEN", help="End of the range, in the same forms [default: now].")
    @click.option("--json", "as_json", is_flag=True, help="JSON lines, one status per line as on the wire.")
    def trace(
        event_id: str | None, user_id: str | None, since: str, until: str | None, as_json: bool
    ) -> None:
        """Print a notification's journey from the status topic, oldest first: skipped or deferred and why,
        each provider attempt, delivered or given up. Reads only the partitions and offsets of the range.
        Exits with 1 when nothing matched, 2 when the broker could not be read."""
        now = datetime.now(UTC)
        try:
            query = TraceQuery(
                since=parse_moment(since, now),
                until=None if until is None else parse_moment(until, now),
                event_id=event_id,
                user_id=user_id,
            )
        except InvalidInput as exc:
            raise click.UsageError(str(exc)) from None
        try:
            read = asyncio.run(read_trace(settings.bootstrap_servers, names.status, query))
        except (BrokerError, KafkaError) as exc:
            failure = click.ClickException(f"cannot read {names.status}: {exc}")
            failure.exit_code = 2  # 1 says that nothing matched
            raise failure from None
        if read.unreadable:
            click.echo(f"{read.unreadable} record(s) in the range are not statuses; left out", err=True)
        if not read.statuses:
            click.echo(f"no statuses for {query.describe()} on {names.status}", err=True)
            raise SystemExit(1)
        click.echo(json_lines(read.statuses) if as_json else table(read.statuses, query), nl=False)

    @cli.command(name="token")
    @click.argument("user_id")
    @click.option("--ttl", default=3600, show_default=True, help="Lifetime in seconds.")
    def token(user_id: str, ttl: int) -> None:
        """Mint a WebSocket token for USER_ID, signed with HERALD_JWT_SECRET (for development and tests)."""
        from gateway.auth import issue_token

        if settings.jwt_secret is None:
            raise click.ClickException("HERALD_JWT_SECRET is not set")
        click.echo(
            issue_token(
                settings.jwt_secret.get_secret_value(), user_id, ttl, algorithm=settings.jwt_algorithm
            )
        )

    @cli.command(name="listen")
    @click.option(
        "--token-file",
        type=click.File("r", encoding="utf-8"),
        default=None,
        help=f"A file holding the token (`-`: standard input) [default: ${LISTEN_TOKEN_ENV}]. `herald dev` "
        "writes one per example user; `herald token USER` prints one.",
    )
    # Refused, not taken: a command's arguments are readable by every user of the machine (ps).
    @click.option("--token", "token_argument", hidden=True, default=None)
    @click.option("--url", default=None, help="The gateway's WebSocket URL [default: from the settings].")
    def listen(token_file: TextIO | None, token_argument: str | None, url: str | None) -> None:
        """Print the frames the gateway sends one user, until Ctrl-C: a WebSocket client to try Herald. The
        token is read from $HERALD_LISTEN_TOKEN or --token-file, never from the command line."""
        from streams.cli.listen import listen_forever

        if token_argument is not None:
            raise click.UsageError(
                "--token is not taken: a command's arguments are visible to every user of this machine (ps). "
                f"Put the token in ${LISTEN_TOKEN_ENV} or in a file for --token-file."
            )
        token = listen_token(token_file, os.environ)
        target = url or f"ws://{settings.gateway_host}:{settings.gateway_port}/ws"
        try:
            asyncio.run(listen_forever(target, token))
        except KeyboardInterrupt:
            pass

    @cli.command(name="gateway")
    def gateway() -> None:
        """Run the in-app WebSocket gateway."""
        from gateway.app import serve

        try:
            # uvloop (which uvicorn[standard] installs): the same sockets cost about 1.4x the CPU per frame on
            # the standard loop (bench/RESULTS.md, "WebSocket server stacks").
            uvloop.run(serve(settings))
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from None

    @cli.command(name="dev")
    @click.option(
        "--users",
        "users_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=Path("examples/users.json"),
        show_default=True,
        help="Profiles to load at start (skipped if the file does not exist).",
    )
    def dev(users_file: Path) -> None:
        """Run everything on this machine: embedded broker, worker, gateway, and a local SMTP sink."""
        from streams.cli.dev import run_dev

        try:
            code = run_dev(settings, users_file=users_file)
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from None
        raise SystemExit(code)
