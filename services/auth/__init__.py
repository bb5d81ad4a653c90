"""Who is asking: credentials and principals, bearer tokens and JWTs, the NATS accounts that enforce roles."""
