#!/usr/bin/env python3
"""Writes a pretend telescope's observation runs into ROOT.

Each run is a text file `NNNNNN.txt` with one event per line: `<event number> <size>`.
Some events are broken: their line is garbage that does not parse. The logbook
`ROOT/logbook.json` lists the broken events of every run. The same seed writes the same
files, so rerunning is harmless.
"""

import argparse
import json
import os
import random


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, help="folder to write the runs into")
    parser.add_argument("--num-runs", type=int, default=8)
    parser.add_argument("--num-events", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    os.makedirs(args.root, exist_ok=True)
    run_ids = sorted(rng.sample(range(1, 1000), args.num_runs))
    logbook = {}
    for run_id in run_ids:
        name = "{:06d}".format(run_id)
        broken = sorted(rng.sample(range(1, args.num_events + 1), rng.randint(1, 4)))
        lines = []
        for event in range(1, args.num_events + 1):
            if event in broken:
                lines.append("{:d} ### read-out error ###".format(event))
            else:
                lines.append("{:d} {:d}".format(event, rng.randint(0, 25)))
        write_atomic(os.path.join(args.root, name + ".txt"), "\n".join(lines) + "\n")
        logbook[name] = broken
    write_atomic(
        os.path.join(args.root, "logbook.json"), json.dumps(logbook, indent=2) + "\n"
    )
    print("wrote {:d} runs into {:s}".format(len(run_ids), args.root))


def write_atomic(path, text):
    tmp = path + ".part"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
