"""The shared kernel: settings, the error tree, logging, listen ports and topic names. Pydantic and the
standard library only; every other package may import it, and it imports nothing of Herald but schemas."""
