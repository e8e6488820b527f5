"""Herald's Faust tables: JSON keys and values on compacted changelogs, partitioned like the topics they
serve (a str key survives the changelog round trip as str; raw would come back as bytes)."""

from __future__ import annotations

from typing import Any

import faust

from kernel.settings import Settings


def declare_table(app: faust.App, settings: Settings, name: str) -> Any:
    changelog = app.topic(
        f"{settings.app_id}-{name}-changelog",
        key_serializer="json",
        value_serializer="json",
        partitions=settings.partitions,
        replicas=settings.replication_factor,
        compacting=True,
        internal=True,
    )
    return app.Table(name, default=None, partitions=settings.partitions, changelog_topic=changelog)
