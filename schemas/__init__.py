"""Herald's wire formats: pydantic models for everything that crosses a topic or a socket."""
