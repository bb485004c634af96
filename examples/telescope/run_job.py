#!/usr/bin/env python3
"""Processes one observation run (the job in $POOLPARTY_JOB).

Reads every event of the run except the broken ones (their lines do not parse) and writes a
small JSON result to $POOLPARTY_RESULT: how many events were read, skipped, and how many
had a size above the job's threshold.
"""

import json
import os


def main():
    job = json.loads(os.environ["POOLPARTY_JOB"])
    skip = set(job["broken_events_to_be_skipped"])
    num_events = 0
    num_skipped = 0
    num_above_threshold = 0
    with open(os.path.join(job["work_dir"], job["basename"])) as f:
        for line in f:
            event, _, rest = line.strip().partition(" ")
            if int(event) in skip:
                num_skipped += 1
                continue
            size = int(rest)  # a broken event that was not skipped fails here
            num_events += 1
            if size > job["threshold_size"]:
                num_above_threshold += 1
    result = {
        "id": job["id"],
        "num_events": num_events,
        "num_skipped": num_skipped,
        "num_above_threshold": num_above_threshold,
    }
    with open(os.environ["POOLPARTY_RESULT"], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
