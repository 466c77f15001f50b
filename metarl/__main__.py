"""``python -m metarl`` is the ``metarl`` command."""

from metarl.cli import main

raise SystemExit(main())
