-- The audit tables' secondary indexes (``index_sql``): a rebuild creates them once its tables
-- are loaded, which is about twice as fast as keeping them up to date row by row.
CREATE INDEX IF NOT EXISTS audit_project ON audit_events (project_id, position);
CREATE INDEX IF NOT EXISTS audit_principal ON audit_events (principal, position);
CREATE INDEX IF NOT EXISTS audit_milestone ON audit_events (milestone_id, position) WHERE milestone_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_actor ON audit_events (actor, position);
CREATE INDEX IF NOT EXISTS audit_source ON audit_events (source, position);
CREATE INDEX IF NOT EXISTS audit_type ON audit_events (type, position);
CREATE INDEX IF NOT EXISTS audit_correlation ON audit_events (correlation_id);
CREATE INDEX IF NOT EXISTS audit_occurred ON audit_events (occurred_at);
