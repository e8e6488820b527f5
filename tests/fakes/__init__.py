"""Fake providers: real servers speaking each provider's protocol, recording what they were asked."""
