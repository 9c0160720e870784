"""The shard sample format from DESIGN.md: keys and the metadata every face carries."""
from __future__ import annotations

import re

SHARD_PATTERN = "faces-%06d.tar"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sanitize_key(text: str) -> str:
    """webdataset splits a member name at the first dot and tar paths at '/': keep neither."""
    return _UNSAFE.sub("-", str(text)).strip("-") or "x"


def make_key(photo_id: str, face_index: int) -> str:
    """`<photo_id>_<face_index>`, the sample key of one face."""
    return f"{sanitize_key(photo_id)}_{int(face_index)}"
