"""Checking that a listen address is free before starting a server on it, so the error names the setting."""

from __future__ import annotations

import errno
import socket

from kernel.errors import ConfigurationError


def ensure_port_free(host: str, port: int, setting: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        # create_server sets SO_REUSEADDR like uvicorn does, so a TIME_WAIT leftover is not "in use".
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"{setting}: {host}:{port} is already in use; choose another port"
            ) from None
        raise ConfigurationError(f"{setting}: cannot listen on {host}:{port}: {exc.strerror}") from None
