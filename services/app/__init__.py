"""The application shell: settings, logging, wiring, embedded servers, demo, schema export."""
