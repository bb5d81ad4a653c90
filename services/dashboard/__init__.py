"""The dashboard: page models folded from the log, SVG charts, HTML pages, routes under /ui."""
