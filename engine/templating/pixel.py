"""The open-tracking pixel: the image served at ``/t/o/<token>.gif`` and its place in tracked HTML email."""

from __future__ import annotations

import html
import re

#: A 1x1 transparent GIF89a (43 bytes): header, screen descriptor, 2-colour table, graphic control
#: extension marking colour 0 transparent, image descriptor, LZW data, trailer.
TRANSPARENT_GIF: bytes = (
    b"GIF89a"
    b"\x01\x00\x01\x00\x80\x00\x00"
    b"\x00\x00\x00\xff\xff\xff"
    b"\x21\xf9\x04\x01\x00\x00\x00\x00"
    b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00"
    b"\x02\x02\x44\x01\x00"
    b"\x3b"
)

#: Response headers of the pixel: never cached, so every open reaches us (proxies included).
PIXEL_HEADERS: dict[str, str] = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}

_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def pixel_tag(url: str) -> str:
    return (
        f'<img src="{html.escape(url, quote=True)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;" />'
    )


def insert_pixel(document: str, url: str) -> str:
    """``document`` with the pixel just before its last ``</body>`` (at the end when it has none)."""
    tag = pixel_tag(url)
    ends = list(_BODY_END.finditer(document))
    if not ends:
        return document + tag
    at = ends[-1].start()
    return document[:at] + tag + document[at:]
