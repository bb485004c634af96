#!/usr/bin/env python3
"""One job: the population standard deviation of the array in $POOLPARTY_JOB."""

import json
import os
import statistics


def main():
    values = json.loads(os.environ["POOLPARTY_JOB"])
    with open(os.environ["POOLPARTY_RESULT"], "w") as f:
        json.dump(statistics.pstdev(values), f)


if __name__ == "__main__":
    main()
