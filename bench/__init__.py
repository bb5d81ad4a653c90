"""`milestones bench`: the workload, the raw limits, the scenarios and the report."""
