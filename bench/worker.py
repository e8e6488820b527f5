"""Herald's worker as `herald worker` runs it, with one benchmark-only switch: `BENCH_STORE=rocksdb://` puts
the tables in Faust's RocksDB store (rocksdict) instead of the memory store the production app fixes."""

from __future__ import annotations

import os
import sys
from typing import Any

import streams.app


class _StoreOverride(streams.app.HeraldApp):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["store"] = os.environ["BENCH_STORE"]
        super().__init__(*args, **kwargs)


def main() -> None:
    if os.environ.get("BENCH_STORE"):
        streams.app.HeraldApp = _StoreOverride  # type: ignore[misc]
    streams.app.main(["herald", "worker", "-l", "warn"])


if __name__ == "__main__":
    sys.argv = ["herald", "worker", "-l", "warn"]
    main()
