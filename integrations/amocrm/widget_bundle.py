"""Builds the amoCRM widget archive (uploaded as a private integration's widget).

The sources are in ./widget: manifest.json (locations: lcard-1 for the card, advanced_settings and
widget_page for the dashboard as a full page), script.js (the SDK callbacks),
i18n/ru.json and i18n/en.json. The build puts the card UI (shared with the Bitrix24 tab) and
crmwatch's address into script.js, and draws the logos amoCRM asks for, so the archive has no
binary sources and no external resources.
"""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from pathlib import Path

SOURCES = Path(__file__).parent / "widget"
CORE_MARK = "/*@CRMWATCH_CARD_CORE@*/"
URL_MARK = "/*@CRMWATCH_URL@*/"

# File name → size amoCRM's widget requirements name for each logo.
LOGOS = {
    "logo_main.png": (400, 272),
    "logo_medium.png": (240, 84),
    "logo_min.png": (84, 84),
    "logo_small.png": (108, 108),
    "logo.png": (130, 100),
    "logo_dp.png": (174, 109),
}
_GREEN, _WHITE, _AMBER = (46, 125, 91), (255, 255, 255), (240, 160, 32)


def _png(width: int, height: int) -> bytes:
    """A small logo: a green field with a white card and an amber warning bar on it."""
    rows = []
    cw, ch = int(width * 0.56), int(height * 0.62)
    x0, y0 = (width - cw) // 2, (height - ch) // 2
    for y in range(height):
        row = bytearray(b"\x00")  # filter type 0 for the row
        for x in range(width):
            inside = x0 <= x < x0 + cw and y0 <= y < y0 + ch
            bar = inside and x < x0 + max(3, cw // 10)
            line = inside and (y - y0) % max(6, ch // 5) in (ch // 10, ch // 10 + 1) and x > x0 + cw // 5
            row += bytes(_AMBER if bar else (_GREEN if line else (_WHITE if inside else _GREEN)))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


def script(crmwatch_url: str, card_core_js: str) -> str:
    source = (SOURCES / "script.js").read_text(encoding="utf-8")
    if CORE_MARK not in source or URL_MARK not in source:
        raise RuntimeError("widget/script.js lost its build marks")
    url = json.dumps(crmwatch_url.rstrip("/"))[1:-1].replace("'", "\\'")
    return source.replace(CORE_MARK, card_core_js.strip()).replace(URL_MARK, url)


def build(out: Path, *, crmwatch_url: str, card_core_js: str) -> list[str]:
    """Writes the archive to `out`; returns the names it holds."""
    manifest = json.loads((SOURCES / "manifest.json").read_text(encoding="utf-8"))
    if manifest.get("locations") != ["lcard-1", "advanced_settings", "widget_page"]:
        raise RuntimeError(
            "the widget lives in the lead card's right panel (lcard-1) and opens the dashboard "
            "as a full page (advanced_settings, widget_page)"
        )
    files: dict[str, bytes] = {
        "manifest.json": json.dumps(manifest, ensure_ascii=False, indent=2).encode(),
        "script.js": script(crmwatch_url, card_core_js).encode(),
    }
    for lang in manifest["widget"]["locale"]:
        files[f"i18n/{lang}.json"] = (SOURCES / "i18n" / f"{lang}.json").read_bytes()
    for name, (w, h) in LOGOS.items():
        files[f"images/{name}"] = _png(w, h)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            # A fixed timestamp: the same sources give the same archive.
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return list(files)
