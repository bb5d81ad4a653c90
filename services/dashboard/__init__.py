"""The dashboard: page models folded from the log, SVG charts, HTML pages, and their routes under /ui."""
