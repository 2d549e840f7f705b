"""The report as one self-contained HTML file: the same blocks as ``report.md``, figures embedded
as base64 PNG. Only the Markdown inline markup the report uses is converted (``**bold**``,
``*italic*`` / ``_italic_``, ``` `code` ```); no dependency beyond the standard library."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Sequence

from wsolctl.results.blocks import Block, Bullets, Heading, Image, Table, Text

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1400px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
code { background: #f4f4f4; padding: 0 0.2em; }
p.caption { font-size: 0.85em; color: #555; }
img { max-width: 100%; }
"""
_INLINE = [(re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
           (re.compile(r"(?<![\w*])\*(?!\s)(.+?)\*(?![\w*])"), r"<em>\1</em>"),
           (re.compile(r"(?<!\w)_(?!\s)(.+?)_(?!\w)"), r"<em>\1</em>")]


def inline(text: str) -> str:
    """Markdown inline markup → HTML (text escaped; code spans are left as they are)."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        part = html.escape(part, quote=False)
        for pattern, replacement in _INLINE:
            part = pattern.sub(replacement, part)
        out.append(part)
    return "".join(out)


def to_html(blocks: Sequence[Block], root: Path) -> str:
    """``root``: the folder image paths are relative to."""
    title = next((b.text for b in blocks if isinstance(b, Heading)), "wsolctl report")
    body = [_block(b, Path(root)) for b in blocks]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _block(block: Block, root: Path) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{inline(block.text)}</h{block.level}>"
    if isinstance(block, Text):
        return f"<p>{inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>\n" + "\n".join(f"<li>{inline(item)}</li>" for item in block.items) + "\n</ul>"
    if isinstance(block, Image):
        data = base64.b64encode((root / block.path).read_bytes()).decode("ascii")
        return f"<p><img alt=\"{html.escape(block.alt)}\" src=\"data:image/png;base64,{data}\"></p>"
    if isinstance(block, Table):
        return _table(block)
    raise TypeError(f"unknown report block {block!r}")


def _table(table: Table) -> str:
    lines = [f"<h3>{inline(table.title)}</h3>"] if table.title else []
    lines += ["<table>", "<tr>" + "".join(f"<th>{inline(h)}</th>" for h in table.header) + "</tr>"]
    lines += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in table.rows]
    lines.append("</table>")
    if table.caption:
        lines.append(f"<p class=\"caption\">{inline(table.caption)}</p>")
    return "\n".join(lines)
