"""The `herald` command. `herald gateway` starts here without importing Faust: the gateway needs none of it,
and Faust's command line took about a second of a gateway's start (bench/RESULTS.md, "In-app at scale").
Every other command goes through Faust's command line (streams.app)."""

from __future__ import annotations

import sys
from typing import NoReturn


def main(argv: list[str] | None = None) -> NoReturn:
    argv = sys.argv if argv is None else argv
    arguments = argv[1:]
    if arguments[:1] == ["gateway"] and len(arguments) == 1:
        _gateway()
    from streams.app import main as faust_main

    faust_main(argv)


def _gateway() -> NoReturn:
    import uvloop

    from gateway.app import serve
    from kernel.errors import ConfigurationError
    from kernel.settings import load_settings

    try:
        settings = load_settings()
        # uvloop: the same sockets cost about 1.4x the CPU per frame on the standard loop (bench/RESULTS.md,
        # "WebSocket server stacks").
        uvloop.run(serve(settings))
    except ConfigurationError as exc:
        print(f"herald: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass
    raise SystemExit(0)
