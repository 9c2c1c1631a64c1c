"""``python -m tfcomp.cli``: the ``tfcomp`` command."""

import sys

from tfcomp.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
