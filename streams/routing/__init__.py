"""Routing: which rule governs an event, what each recipient should get (preferences, quiet hours, throttles,
digests, templates), as pure steps; `agents` runs them on Kafka."""
