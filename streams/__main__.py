"""`python -m streams` is the `herald` command, for environments without the console script on PATH."""

from streams.entry import main

main()
