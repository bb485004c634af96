#!/usr/bin/env python3
"""Map job: writes the square of the number in $POOLPARTY_JOB to $POOLPARTY_RESULT.

Usage: square.py TRACE_FILE
"""

import json
import os
import sys
import time


def main():
    trace_path = sys.argv[1]
    mark(trace_path, "start")
    x = json.loads(os.environ["POOLPARTY_JOB"])
    with open(os.environ["POOLPARTY_RESULT"], "w") as f:
        json.dump(x * x, f)
    mark(trace_path, "end")


def mark(path, what):
    """Appends `<monotonic ns> <stage> <job id> <start|end>` to the trace file.

    One `write` to a file opened for appending, so concurrent jobs never interleave within a
    line and the file's line order is the order in which the events happened.
    """
    line = "{:d} {:s} {:s} {:s}\n".format(
        time.monotonic_ns(),
        os.environ["POOLPARTY_STAGE"],
        os.environ["POOLPARTY_JOB_ID"],
        what,
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
