"""The `herald` command line: dev, publish, users, preferences, rules, token, listen, gateway."""
