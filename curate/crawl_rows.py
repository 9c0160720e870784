"""One search result -> one catalog row, or the reason it is not catalogued.

Filters are applied here, on the client, whatever the server did: a licence outside the
allowed set is rejected even if the API returned it, and the `no_cv` opt-out tag is honoured.
The image URL is the preferred size (800 px `url_c` by default), else the largest size offered
under a pixel cap.
"""
from __future__ import annotations

from typing import Iterable

OPT_OUT_TAGS = {"no_cv", "nocv", "no-cv"}
SIZE_SUFFIXES = ("o", "k", "h", "l", "b", "c", "z", "n", "m", "w", "q", "s", "t", "sq")


def _int(value, default: int | None = None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def opted_out(tags: str) -> bool:
    """Flickr's `tags` extra is space-separated, lower-cased ("clean") tags."""
    return any(t.lower() in OPT_OUT_TAGS for t in tags.split())


def choose_url(photo: dict, preferred: str = "c",
               max_pixels: int = 1600 * 1600) -> tuple[str, int | None, int | None] | None:
    """(url, width, height): the preferred size if offered, else the largest under `max_pixels`."""
    def size(s: str) -> tuple[str, int | None, int | None] | None:
        url = photo.get(f"url_{s}")
        if not url:
            return None
        return url, _int(photo.get(f"width_{s}")), _int(photo.get(f"height_{s}"))

    best = size(preferred)
    if best:
        return best
    candidates = []
    for s in SIZE_SUFFIXES:
        found = size(s)
        if found and found[1] and found[2] and found[1] * found[2] <= max_pixels:
            # On a tie, a resized JPEG beats the original (which may be a huge PNG or TIFF).
            candidates.append(((found[1] * found[2], s != "o"), found))
    return max(candidates, key=lambda c: c[0])[1] if candidates else None


def photo_row(photo: dict, query: str, licenses: Iterable[int], preferred: str = "c",
              max_pixels: int = 1600 * 1600) -> tuple[dict | None, str | None]:
    """(row, None) for a photo to catalogue, or (None, reason) with reason in
    {'license', 'no_cv', 'no_url'}."""
    license = _int(photo.get("license"), -1)
    if license not in set(licenses):
        return None, "license"
    tags = photo.get("tags") or ""
    if opted_out(tags):
        return None, "no_cv"
    chosen = choose_url(photo, preferred, max_pixels)
    if chosen is None:
        return None, "no_url"
    url, width, height = chosen
    title = photo.get("title")
    if isinstance(title, dict):
        title = title.get("_content", "")
    return {"id": str(photo["id"]), "owner": photo.get("owner"), "ownername": photo.get("ownername"),
            "license": license, "title": title or "", "tags": tags,
            "dateupload": _int(photo.get("dateupload")), "url": url, "width": width,
            "height": height, "query": query, "source": "flickr"}, None
