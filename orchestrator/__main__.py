"""``python -m orchestrator``: see :mod:`orchestrator.cli`."""

from .cli import main

raise SystemExit(main())
