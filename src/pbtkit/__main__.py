"""``python -m pbtkit`` is the ``pbtkit`` command."""

from pbtkit.cli import main

raise SystemExit(main())
