"""The in-process background worker: job state machine, webhook dispatcher, watchdog."""
