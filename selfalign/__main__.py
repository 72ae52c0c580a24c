"""``python -m selfalign``: the command line."""

from selfalign.cli import main

main()
