"""The read side's queries: parameters and envelopes, the queries, and their HTTP and NATS adapters."""
