"""What a unitvox command's exit code means; Jobs' failure policies and CI read these."""

DONE = 0
FAILED = 1  # the run broke: a bug, a store error, or an earlier stage not finished
CONFIG = 2  # a bad config or bad input; retrying cannot help
GATES_FAILED = 3  # the run worked, and the model failed a quality gate
UNHEALTHY = 4  # training stopped on a critical health check; rerunning the same config would repeat it
INTERRUPTED = 143  # 128 + SIGTERM: stopped after saving progress, e.g. a preempted pod

PERMANENT = (CONFIG, GATES_FAILED, UNHEALTHY)
WAIT_FOR_INPUTS_ENV = "UNITVOX_WAIT_FOR_INPUTS_SECONDS"
