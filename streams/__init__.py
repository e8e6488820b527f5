"""Herald's stream processing: the Faust app, its topics, tables and agents, and the logic they call."""
