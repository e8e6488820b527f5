"""Delivery: providers in failover order, retries, dedup and token hygiene, as pure decisions; `agents` runs
them on each channel's topics."""
