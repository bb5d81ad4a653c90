"""The ``milestones`` command line: run services, publish, read, operate."""
