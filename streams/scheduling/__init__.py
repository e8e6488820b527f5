"""Durable delays: records wait on fixed-delay tier topics until they are due."""
