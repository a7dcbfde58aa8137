"""``python -m autotrace [options] COMMAND [ARGS...]``: the same as the ``autotrace`` command."""

from .zerocode.cli import main

if __name__ == "__main__":
    main()
