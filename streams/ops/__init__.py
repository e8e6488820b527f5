"""Operations: the worker's health and metrics endpoint, consumer lag, and the provider webhooks it serves."""
