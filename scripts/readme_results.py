"""Copy a quickstart run's results table and two of its figures into the README (nothing typed by hand).

python scripts/readme_results.py runs/quickstart --machine "2-core CPU, fresh clone, 513 s in all"
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

START, END = "<!-- RESULTS -->", "<!-- /RESULTS -->"
FIGURES = ["supertokens_s16.png", "accuracy_vs_s.png"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--machine", required=True, help="where and how the run was made, for the caption")
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    args = ap.parse_args()
    report = (args.run / "report.md").read_text()
    table = re.search(r"^\| \| teacher.*?(?=\n\n)", report, re.S | re.M)
    if table is None:
        raise SystemExit(f"{args.run / 'report.md'} has no results table; is the quickstart finished?")
    order = ["data", "distill", "eval", "bench", "report"]
    found = sorted((args.run / "stages").glob("*.json"), key=lambda p: [*order, p.stem].index(p.stem))
    stages = {p.stem: json.loads(p.read_text())["seconds"] for p in found}
    docs = args.readme.parent / "docs"
    docs.mkdir(exist_ok=True)
    for f in FIGURES:
        shutil.copyfile(args.run / "figures" / f, docs / f)
    block = "\n".join(
        [
            START,
            "## Results of the main command",
            "",
            f"From `foundry3d quickstart` ({args.machine}; stage seconds: "
            + ", ".join(f"{k} {v:.0f}" for k, v in stages.items())
            + "). Scores in %, mean ± spread; bold: student / teacher. The full report adds plots, the benchmark "
            "at 1k-32k points and the recipe.",
            "",
            table.group(0),
            "",
            f"![SuperTokens of the s = 16 student](docs/{FIGURES[0]})",
            "",
            f"![Accuracy against the number of SuperTokens](docs/{FIGURES[1]})",
            END,
        ]
    )
    text = args.readme.read_text()
    if START not in text:
        raise SystemExit(f"{args.readme} has no {START} marker")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1] if END in rest else rest
    args.readme.write_text(head + block + tail)
    print(f"updated {args.readme} from {args.run}")


if __name__ == "__main__":
    main()
