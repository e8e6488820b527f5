"""`python -m streams` is the `herald` command, for environments without the console script on PATH."""

from streams.app import main

main()
