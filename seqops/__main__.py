"""`python -m seqops`: the `seqops` command."""
import sys

from seqops.cli import main

if __name__ == "__main__":
    sys.exit(main())
