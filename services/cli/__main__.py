"""``python -m services.cli``: the same as the ``milestones`` command."""

from services.cli.main import main

raise SystemExit(main())
