"""The in-app inbox, kept by the worker that owns each user's partition (the contract: schemas/inbox.py)."""
