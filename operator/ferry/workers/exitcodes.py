"""How a worker tells the operator, through its pod's exit code, what became of its work."""

SUCCEEDED = 0
CRASHED = 1  # anything unexpected: the operator starts another worker, within the restart budget
FAILED = 2  # a terminal failure, explained in the resource's status.failure: do not retry
STOPPED = 3  # asked to stop (SIGTERM); the work resumes from its checkpoint when a worker is started again
