"""Who is asking: credentials, principals, bearer tokens, JWTs, and NATS accounts for roles."""
