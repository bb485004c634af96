"""``python -m poolparty ARGS`` runs the ``poolparty`` binary that came with this package."""

import os
import sys

from ._binary import find_poolparty_bin


def main() -> None:
    binary = find_poolparty_bin()
    os.execv(binary, [binary, *sys.argv[1:]])


if __name__ == "__main__":
    main()
