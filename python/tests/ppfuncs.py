"""Functions the tests map, importable by name on the nodes (pickled by reference)."""

import json
import os
import subprocess
import sys
import time
import uuid


def square(x):
    return x * x


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"no threes here: {x}")
    return x


def record(x, folder, seconds=0.0):
    """Leaves one file per call in ``folder`` (so a test can count the runs), then sleeps."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{x}-{uuid.uuid4().hex}"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    return x * x


def sleep_then(x, seconds):
    time.sleep(seconds)
    return x


def wait_for_file(x, path, folder):
    """Item ``x`` records that it started, then waits until ``path`` exists."""
    record(x, folder)
    while x == 1 and not os.path.exists(path):
        time.sleep(0.2)
    return x


def kill_self(x):
    if x == 1:
        os.kill(os.getpid(), 9)
    return x


def telescope_job(job):
    """pypoolparty's tutorial job: runs examples/telescope/run_job.py on one job, returns its
    return code and its result."""
    here = os.path.dirname(os.path.abspath(__file__))
    script = os.path.join(here, "..", "..", "examples", "telescope", "run_job.py")
    result = os.path.join(job["work_dir"], job["id"] + ".result.json")
    env = {**os.environ, "POOLPARTY_JOB": json.dumps(job), "POOLPARTY_RESULT": result}
    rc = subprocess.run([sys.executable, script], env=env).returncode
    with open(result) as f:
        return rc, json.load(f)


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __repr__(self):
        return f"Point({self.x}, {self.y})"


def make_point(x):
    return Point(x, -x)


def sleep_then_star(args):
    return sleep_then(*args)


def record_star(args):
    return record(*args)


def wait_for_file_star(args):
    return wait_for_file(*args)


def getenv(name):
    return os.environ.get(name)
