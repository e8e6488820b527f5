"""`python -m bench.gateway_entry`: what `herald gateway` runs (`gateway.app.serve` on uvloop, settings from
the environment), without the `herald` command line around it, which imports Faust first. The in-app scale
phase starts both, to tell the import's share of a gateway's start from the gateway's own."""

from __future__ import annotations

import uvloop

from gateway.app import serve
from kernel.settings import load_settings


def main() -> None:
    uvloop.run(serve(load_settings()))


if __name__ == "__main__":
    main()
