"""Reports rendered from result records through jinja2 templates (Markdown and HTML side by side)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from foundry3d.files import atomic_write

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("foundry3d.report", "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def _html_cell(text: Any) -> markupsafe.Markup:
    return markupsafe.Markup("<br>").join(markupsafe.escape(part) for part in str(text).split("\n"))


def _inline_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


_ENV.filters["md_cell"] = _md_cell
_ENV.filters["html_cell"] = _html_cell


def render(template: str, **context: Any) -> str:
    """Render a report template (strict: a missing value is an error, never an empty cell)."""
    return _ENV.get_template(template).render(**context)


def write_pair(out: Path, stem: str, template: str, **context: Any) -> tuple[Path, Path]:
    """``<out>/<stem>.md`` and a self-contained ``<out>/<stem>.html`` (figures inlined) from one context."""
    md = render(f"{template}.md.j2", **context)
    figures = {name: _inline_png(out / rel) for name, rel in context.get("figures", {}).items()}
    html = render(f"{template}.html.j2", inline=figures, **context)
    atomic_write(out / f"{stem}.md", lambda tmp: Path(tmp).write_text(md))
    atomic_write(out / f"{stem}.html", lambda tmp: Path(tmp).write_text(html))
    return out / f"{stem}.md", out / f"{stem}.html"
