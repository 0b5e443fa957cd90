"""``pushsvc``: publish, listen and look at a running pushsvc server over HTTP.

    pushsvc publish --to u1 '{"order": 42}' --json --event order --idempotency-key order-42
    echo "deploy finished" | pushsvc publish --group ops
    pushsvc listen u1 --group ops
    pushsvc clients

Standard library only, so it runs wherever pushsvc is installed. The server is ``--url`` (or
``PUSHSVC_URL``, default ``http://127.0.0.1:8000``) with the blueprint at ``--url-prefix``
(``PUSHSVC_URL_PREFIX``, default ``/sse``). ``PUSHSVC_PUBLISH_TOKEN`` (or ``--token``) is sent as a
bearer token. Every failure is one line on standard error and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any, TextIO
from urllib.parse import quote

from .cli_client import Client, CliError, describe_http_error, reason

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_PREFIX = "/sse"
DEFAULT_TIMEOUT = 10.0
# Heartbeats come every 15 s by default: a stream silent for this long is dead, whatever TCP thinks.
DEFAULT_IDLE_SECONDS = 60.0
# Reconnection: the server's retry: hint, doubled per failure in a row, capped, with jitter.
MAX_BACKOFF_SECONDS = 30.0
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


# -- publish ----------------------------------------------------------------------------------------


def publish(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    text = args.data
    if text is None or text == "-":
        text = sys.stdin.read()
        # `echo hi | pushsvc publish …` means "hi", not "hi" and an empty second line.
        text = text[:-1] if text.endswith("\n") else text
    data: Any = text
    if args.json:
        try:
            data = json.loads(text)
        except ValueError as error:
            raise CliError(f"--json: the data is not valid JSON: {error}") from None
    body: dict[str, Any] = {"data": data}
    if args.to:
        body["to"] = args.to[0] if len(args.to) == 1 else args.to
    elif args.group:
        body["group"] = args.group
    elif args.id_prefix:
        body["prefix"] = args.id_prefix
    else:
        body["broadcast"] = True
    if args.event is not None:
        body["event"] = args.event
    if args.retry is not None:
        body["retry"] = args.retry
    # The same key on a retry (a timeout, a lost answer) publishes nothing twice: the server answers again.
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    out.write(json.dumps(client.call("POST", "/publish", body, headers)) + "\n")
    return 0


# -- clients, close ---------------------------------------------------------------------------------


def clients(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.client_id:
        entries = [client.call("GET", "/clients/" + quote(args.client_id, safe=""))]
        answer: Any = entries[0]
    else:
        answer = client.call("GET", "/clients")
        entries = answer["clients"]
    if args.json:
        out.write(json.dumps(answer) + "\n")
        return 0
    width = max([len("client"), *(len(e["id"]) for e in entries)])
    out.write(f"{'client':<{width}}  connections  groups\n")
    for entry in entries:
        out.write(f"{entry['id']:<{width}}  {entry['connections']:>11}  {','.join(entry['groups']) or '-'}\n")
    if not args.client_id:
        out.write(f"{answer['count']} clients, {answer['connections']} connections\n")
    return 0


def close(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    answer = client.call("POST", "/close/" + quote(args.client_id, safe=""))
    out.write(f"closed {answer['closed']} streams of {args.client_id}\n")
    return 0


# -- listen -----------------------------------------------------------------------------------------


class Stream:
    """One subscribe request read as events, as a browser's EventSource reads it."""

    def __init__(self, client: Client, args: argparse.Namespace, last_event_id: str | None):
        query = [("group", g) for g in args.group]
        headers = {"Accept": "text/event-stream", **client.headers(args.jwt)}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        path = "/subscribe/" + quote(args.client_id, safe="")
        request = urllib.request.Request(client.url(path, query), headers=headers)
        self.reply = urllib.request.urlopen(request, timeout=args.idle)
        self.retry_ms: int | None = None
        self.last_event_id = last_event_id

    def events(self) -> Iterator[dict[str, str]]:
        data: list[str] = []
        event = ""
        while True:
            raw = self.reply.readline()
            if not raw.endswith((b"\n", b"\r")):
                return  # the end, perhaps in the middle of an event, which is then dropped
            for line in _LINE_BREAK.split(raw.decode("utf-8", "replace"))[:-1]:
                if line == "":
                    if data:
                        yield {"id": self.last_event_id or "", "event": event or "message",
                               "data": "\n".join(data)}
                    data, event = [], ""
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event = value
                elif name == "id" and "\x00" not in value:
                    self.last_event_id = value
                elif name == "retry" and value.isascii() and value.isdigit():
                    self.retry_ms = int(value)

    def close(self) -> None:
        self.reply.close()


def listen(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    last_event_id = args.last_event_id
    retry_ms = 3000
    failures = 0
    received = 0
    while True:
        try:
            stream = Stream(client, args, last_event_id)
        except urllib.error.HTTPError as error:
            raise CliError(describe_http_error(error)) from None
        except (urllib.error.URLError, OSError) as error:
            failures += 1
            note(f"cannot reach {client.base}: {reason(error)}", args)
        else:
            if stream.reply.status == 204:
                stream.close()
                note(f"{args.client_id} was closed by the server; not reconnecting", args)
                return 0
            try:
                for event in stream.events():
                    failures = 0
                    if event["event"] == "busy":
                        note(f"the server is busy ({event['data']}); coming back later", args)
                        continue
                    show(event, args, out)
                    received += 1
                    if event["event"] == "close":
                        return 0
                    if args.count and received >= args.count:
                        return 0
                note("the stream ended", args)
            except OSError as error:  # a read timeout (no heartbeat) or a dropped connection
                note(f"the stream broke: {reason(error)}", args)
            finally:
                retry_ms = stream.retry_ms or retry_ms
                last_event_id = stream.last_event_id
                stream.close()
        delay = min(MAX_BACKOFF_SECONDS, retry_ms / 1000 * 2 ** min(failures, 10)) * random.uniform(0.8, 1.2)
        note(f"reconnecting in {delay:.1f} s" + (f" from {last_event_id}" if last_event_id else ""), args)
        time.sleep(delay)


def show(event: dict[str, str], args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        out.write(json.dumps(event, ensure_ascii=False) + "\n")
    else:
        out.write(f"{event['id'] or '-'} {event['event']} {event['data']}\n")
    out.flush()


def note(message: str, args: argparse.Namespace) -> None:
    if not args.quiet:
        sys.stderr.write(f"pushsvc: {message}\n")
        sys.stderr.flush()


# -- the command line -------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    top = argparse.ArgumentParser(prog="pushsvc", description="Talk to a running pushsvc server.")
    top.add_argument("--url", default=env("PUSHSVC_URL") or DEFAULT_URL,
                     help="the server (env PUSHSVC_URL, default %(default)s)")
    top.add_argument("--url-prefix", default=env("PUSHSVC_URL_PREFIX") or DEFAULT_PREFIX,
                     help="where pushsvc is mounted (env PUSHSVC_URL_PREFIX, default %(default)s)")
    top.add_argument("--token", default=env("PUSHSVC_PUBLISH_TOKEN") or None,
                     help="bearer token for publish, close and clients (env PUSHSVC_PUBLISH_TOKEN)")
    top.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per request")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pub = commands.add_parser("publish", help="publish one event")
    target = pub.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", action="append", metavar="CLIENT_ID", help="a client id (repeatable)")
    target.add_argument("--group", help="every connection in this group")
    target.add_argument("--prefix", dest="id_prefix", metavar="ID_PREFIX",
                        help="every client whose id starts with this")
    target.add_argument("--all", action="store_true", help="every open connection")
    pub.add_argument("data", nargs="?", help="the data; read from standard input when absent or -")
    pub.add_argument("--json", action="store_true", help="the data is JSON, send it as that value")
    pub.add_argument("--event", help="the event name")
    pub.add_argument("--retry", type=int, help="a retry: hint in milliseconds")
    pub.add_argument("--idempotency-key", metavar="KEY",
                     help="sent as Idempotency-Key: a repeat with the same key and event publishes nothing")
    pub.set_defaults(run=publish)

    lis = commands.add_parser("listen", help="print events for a client id as they arrive")
    lis.add_argument("client_id")
    lis.add_argument("--group", action="append", default=[], help="join this group (repeatable)")
    lis.add_argument("--last-event-id", help="resume after this event id")
    lis.add_argument("--jwt", default=env("PUSHSVC_SUBSCRIBER_TOKEN") or None,
                     help="subscriber token when the server needs one (env PUSHSVC_SUBSCRIBER_TOKEN)")
    lis.add_argument("--json", action="store_true", help="one JSON object per event")
    lis.add_argument("--count", type=int, default=0, help="exit after this many events")
    lis.add_argument("--idle", type=float, default=DEFAULT_IDLE_SECONDS,
                     help="reconnect after this many seconds without a byte (default %(default)s)")
    lis.add_argument("--quiet", action="store_true", help="no reconnection notes on standard error")
    lis.set_defaults(run=listen)

    cli = commands.add_parser("clients", help="list the connected clients, or one")
    cli.add_argument("client_id", nargs="?")
    cli.add_argument("--json", action="store_true", help="the server's JSON answer")
    cli.set_defaults(run=clients)

    clo = commands.add_parser("close", help="end every stream of a client id for good")
    clo.add_argument("client_id")
    clo.set_defaults(run=close)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = parser().parse_args(argv)
    client = Client(args.url, args.url_prefix, args.token, args.timeout)
    try:
        return args.run(client, args, sys.stdout)
    except CliError as error:
        sys.stderr.write(f"pushsvc: {error}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pushsvc listen u1 | head -3`
        return 0


if __name__ == "__main__":
    sys.exit(main())
