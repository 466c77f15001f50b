"""Shared test settings."""

import os
from pathlib import Path

#: The project's read-only data (``../shared/data`` beside the checkout); ``$METARL_SHARED_DATA``
#: points elsewhere, e.g. when CI clones the repository into another folder.
SHARED_DATA = Path(os.environ.get("METARL_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
