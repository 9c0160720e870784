"""Flickr licence ids, their names and URLs: one table for the crawler, the shards and the reports.

Ids as `flickr.photos.licenses.getInfo` lists them (docs/formats.md). Other sources may carry a
licence name instead of an id; `license_label` shows either.
"""
from __future__ import annotations

from typing import Any

# id: (name, URL stored with each face; None where there is no licence to link)
LICENSES: dict[int, tuple[str, str | None]] = {
    0: ("All Rights Reserved", None),
    1: ("CC BY-NC-SA", "https://creativecommons.org/licenses/by-nc-sa/2.0/"),
    2: ("CC BY-NC", "https://creativecommons.org/licenses/by-nc/2.0/"),
    3: ("CC BY-NC-ND", "https://creativecommons.org/licenses/by-nc-nd/2.0/"),
    4: ("CC BY", "https://creativecommons.org/licenses/by/2.0/"),
    5: ("CC BY-SA", "https://creativecommons.org/licenses/by-sa/2.0/"),
    6: ("CC BY-ND", "https://creativecommons.org/licenses/by-nd/2.0/"),
    7: ("No known copyright restrictions", "https://www.flickr.com/commons/usage/"),
    8: ("US Government Work", "http://www.usa.gov/copyright.shtml"),
    9: ("CC0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    10: ("Public Domain Mark", "https://creativecommons.org/publicdomain/mark/1.0/"),
}
LICENSE_NAMES = {k: name for k, (name, _) in LICENSES.items()}
LICENSE_URLS = {k: url for k, (_, url) in LICENSES.items()}


def license_url(license_id: Any) -> str | None:
    try:
        return LICENSE_URLS.get(int(license_id))
    except (TypeError, ValueError):
        return None


def license_label(value: Any) -> str:
    """"4 CC BY" for a Flickr id, the value itself for a name, "unknown" for nothing."""
    if value is None or value == "":
        return "unknown"
    try:
        number = int(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number} {LICENSE_NAMES.get(number, '?')}"
