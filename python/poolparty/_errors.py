"""The exceptions ``Pool`` raises."""


class JobError(Exception):
    """A job did not return a value: the function raised on the node, or the job failed, was
    lost, timed out or was killed before writing one.

    Attributes: ``index`` (the item's position), ``item`` (the item), ``exc_type`` (the remote
    exception's qualified type name, or the job's outcome such as ``lost``), ``message``,
    ``remote_traceback`` (text, empty when the job wrote none), ``outcome`` and ``exit_code``
    (poolparty's record of the job), ``log`` (the job's stderr log, when any), ``others``
    (how many other items failed). The original exception is chained as ``__cause__`` when it
    unpickles here."""

    def __init__(self, index, item, exc_type, message, remote_traceback="", *,
                 outcome=None, exit_code=None, log=None, others=0, workflow=None):
        self.index = index
        self.item = item
        self.exc_type = exc_type
        self.message = message
        self.remote_traceback = remote_traceback
        self.outcome = outcome
        self.exit_code = exit_code
        self.log = log
        self.others = others
        self.workflow = workflow
        super().__init__(self._text())

    def _text(self):
        item = repr(self.item)
        if len(item) > 200:
            item = item[:200] + "..."
        head = f"job {self.index} (item {item}) raised {self.exc_type}: {self.message}"
        if self.remote_traceback:
            head += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        extra = []
        if self.outcome and self.outcome not in ("succeeded", "failed"):
            extra.append(f"outcome: {self.outcome}")
        if self.log:
            extra.append(f"log: {self.log}")
        if self.others:
            extra.append(f"{self.others} other item{'s' if self.others != 1 else ''} failed too")
        if self.workflow:
            extra.append(f"state: {self.workflow}")
        if extra:
            head += "\n(" + "; ".join(extra) + ")"
        return head

    def __reduce__(self):
        return (_rebuild_job_error, (self.__dict__.copy(),))


def _rebuild_job_error(state):
    err = JobError.__new__(JobError)
    err.__dict__.update(state)
    Exception.__init__(err, err._text())
    return err


class PicklingError(TypeError):
    """The function, an item, or the map's arguments cannot be sent to the nodes: raised before
    anything is submitted, naming the object."""


class VersionMismatchError(RuntimeError):
    """The interpreter or cloudpickle of the jobs differs from the caller's (raised before
    anything is submitted), or the ``poolparty`` binary found is not the package's version."""


class RunnerError(RuntimeError):
    """``poolparty`` itself failed (invalid settings, a backend refused the submission, or it was
    interrupted): the message holds its exit code and error output."""
