"""`python -m mininet`: the command line (mininet.cli)."""
from .cli import main

main()
