"""The write side: parse CloudEvents, decide in group-commit rounds, append; NATS, inbox, HTTP, deadlines."""
