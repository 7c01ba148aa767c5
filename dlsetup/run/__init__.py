"""The run stage: the one place that talks to ansible-runner (:mod:`dlsetup.run.runner`)."""
