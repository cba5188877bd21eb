"""What every export folder holds: the files that say what it is."""

from __future__ import annotations

#: The file that says what an export (or a saved refit model) is.
EXPORT_JSON = "neurofm_export.json"
#: A saved refit model's record: its files' digests, written last (a folder without it is incomplete).
REFIT_RECORD = "refit.json"
_FORMAT_VERSION = 1
_PROBE_FORMAT = "frozen-probe"
_HEAD_FILE = "head.safetensors"
_CHECKPOINT_TAG = "best"
