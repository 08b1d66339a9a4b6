"""Markdown + self-contained HTML (images inlined as base64) from a report description."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path


def markdown_to_html(md: str, base: Path, title: str) -> str:
    """A small Markdown subset (headings, tables, lists, images, code, emphasis, paragraphs)."""

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
        text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
        return re.sub(r"(?<![*\w])\*([^*]+)\*(?!\w)", r"<em>\1</em>", text)

    out, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif m := re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", line.strip()):
            data = base64.b64encode((base / m.group(2)).read_bytes()).decode()
            out.append(
                f'<figure><img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}">'
                f"<figcaption>{inline(m.group(1))}</figcaption></figure>"
            )
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            head, body = rows[0], [r for r in rows[2:]]
            out.append("<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body]
            out.append("</tbody></table>")
            continue
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(html.escape(lines[i]))
                i += 1
            out.append("<pre>" + "\n".join(block) + "</pre>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}figure{margin:1em 0}figcaption{font-size:13px;color:#555}"
        "pre{background:#f6f6f6;padding:8px;overflow-x:auto}code{background:#f3f3f3;padding:0 3px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n"
    )


def write_report(md: str, folder: Path, title: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    md_path = folder / "report.md"
    md_path.write_text(md)
    html_path = folder / "report.html"
    html_path.write_text(markdown_to_html(md, folder, title))
    return md_path, html_path
