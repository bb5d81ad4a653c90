"""Plans in and out: MS Project XML (MSPDI) parsing, mapping to events, and export. Pure."""
