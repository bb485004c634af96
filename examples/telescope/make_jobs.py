#!/usr/bin/env python3
"""Prints one job per observation run in ROOT, as JSON Lines.

A job names its run file and the events the logbook marks as broken, e.g.
{"id": "000086", "work_dir": "...", "basename": "000086.txt",
 "broken_events_to_be_skipped": [14, 54, 85], "threshold_size": 10}
"""

import argparse
import json
import os


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, help="folder holding the runs")
    parser.add_argument("--threshold-size", type=int, default=10)
    args = parser.parse_args()

    root = os.path.abspath(args.root)
    with open(os.path.join(root, "logbook.json")) as f:
        logbook = json.load(f)
    for basename in sorted(os.listdir(root)):
        run_id, ext = os.path.splitext(basename)
        if ext != ".txt":
            continue
        job = {
            "id": run_id,
            "work_dir": root,
            "basename": basename,
            "broken_events_to_be_skipped": logbook.get(run_id, []),
            "threshold_size": args.threshold_size,
        }
        print(json.dumps(job))


if __name__ == "__main__":
    main()
