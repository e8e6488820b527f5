"""How much of a backlog a worker holds in memory: a batch-fed agent's stream queue holds a few fetched
batches per partition (streams.runtime.topics.batch_fed_topic), not Faust's 4,096 messages, each of which is
a partition's whole fetch here. Faust's `App.topic` drops the `maxsize` it is given, so a worker once pulled a
whole 40,000-event backlog into memory."""

from __future__ import annotations

from typing import Any

from kernel.settings import Settings
from streams.bootstrap import create_worker
from streams.runtime.topics import BATCHES_PER_PARTITION


async def test_every_batch_fed_agent_queues_a_few_batches_per_partition_and_never_blocks_the_fetch() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    worker = create_worker(settings)
    batch_fed, partitions = worker.topics.names.batch_fed, settings.partitions
    agents = [agent for agent in worker.app.agents.values() if set(agent.channel.topics) <= batch_fed]
    # routing's two, a fresh agent per channel, the inbox over the in-app and inbox-command topics
    assert {topic for agent in agents for topic in agent.channel.topics} == batch_fed
    for agent in agents:
        queue: Any = agent.channel.clone(is_iterator=True).queue  # what the agent's stream reads from
        feeding = partitions * len(agent.channel.topics)
        assert queue.maxsize < worker.app.conf.stream_buffer_maxsize
        # Faust stops handing a partition over once a put finds the queue at its pressure mark, and that
        # put still goes in: one more batch of each partition must fit, or the fetch loop waits on a full
        # queue and every other topic's records with it.
        assert queue.pressure_high_size >= BATCHES_PER_PARTITION * feeding
        assert queue.pressure_high_size + feeding < queue.maxsize
    # The per-record topics (retry tiers, users, preferences) keep Faust's own bound: a message is a record.
    retry = worker.topics.retries[next(iter(worker.topics.retries))][0]
    assert retry.clone(is_iterator=True).queue.maxsize == worker.app.conf.stream_buffer_maxsize
