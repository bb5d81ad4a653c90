-- The audit tables' secondary indexes (``index_sql``): a rebuild creates them once its tables
-- are loaded, which is about twice as fast as keeping them up to date row by row. Who sent an
-- event and who it says acted are optional (events stored before the trust boundary have no
-- principal, and publishers may leave actor out): a filter by either never matches NULL, so neither
-- index holds the rows without one (the benchmark's log has no actor at all: its index was 13 MB
-- of NULLs, and audit's eight indexes built in 1.5-2.0 s instead of 1.8-2.4 s, 2026-12-07).
CREATE INDEX IF NOT EXISTS audit_project ON audit_events (project_id, position);
CREATE INDEX IF NOT EXISTS audit_principal ON audit_events (principal, position) WHERE principal IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_milestone ON audit_events (milestone_id, position) WHERE milestone_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_actor ON audit_events (actor, position) WHERE actor IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_source ON audit_events (source, position);
CREATE INDEX IF NOT EXISTS audit_type ON audit_events (type, position);
CREATE INDEX IF NOT EXISTS audit_correlation ON audit_events (correlation_id);
CREATE INDEX IF NOT EXISTS audit_occurred ON audit_events (occurred_at);
