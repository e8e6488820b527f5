"""Herald's stream processing: the Faust app, its topics, tables and agents, and the domain logic they call."""
