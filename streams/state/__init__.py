"""Per-user state: profiles and preferences applied from their compacted topics, and the rules in force."""
