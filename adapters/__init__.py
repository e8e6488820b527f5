"""Adapters to the world outside Herald: providers, brokers. Each kind sits behind one small Protocol."""
