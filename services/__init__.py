"""The Milestones services: a pure domain core and the thin shells around it."""
