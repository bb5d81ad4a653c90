"""The event log on NATS JetStream: stream setup and checks, aggregate reads, atomic appends."""
