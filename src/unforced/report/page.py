"""The HTML page shell every page of the project shares (the run report, the studies' reports, the lab): one
stylesheet, a title, a body. Pages build their body; this module knows nothing of runs."""

from __future__ import annotations

import html

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%}pre{background:#f6f6f6;padding:1em}
.note{background:#fff6e0;padding:.5em 1em}table.signature td{text-align:left}"""


def page(title: str, body: str, extra_head: str = "") -> str:
    """A whole HTML document: `title` is escaped here; `body` and `extra_head` are HTML already."""
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>\n"
            f"<style>{STYLE}</style>{extra_head}\n</head><body>\n{body}\n</body></html>\n")


__all__ = ["STYLE", "page"]
