"""The application shell: settings, logging, the one wiring module, embedded servers, demo, schema export."""
