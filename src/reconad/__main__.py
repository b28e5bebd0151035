"""``python -m reconad`` = the ``reconad`` command."""

from reconad.cli import main

main()
