"""Names Herald derives from the configured ones, kept in one place so producers and consumers agree."""

from __future__ import annotations


def retry_topic_name(base: str, tier: int) -> str:
    """`herald.deliver.email` → `herald.deliver.email.retry.1`."""
    return f"{base}.retry.{tier}"
