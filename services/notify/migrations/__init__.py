"""The notifier's tables, versioned with Alembic (schema ``milestones_notify``; see ``store``)."""
