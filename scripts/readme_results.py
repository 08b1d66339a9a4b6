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


def results_table(run: Path) -> str:
    table = re.search(r"^\| \| teacher.*?(?=\n\n)", (run / "report.md").read_text(), re.S | re.M)
    if table is None:
        raise SystemExit(f"{run / 'report.md'} has no results table; is the quickstart finished?")
    return table.group(0)


def stage_seconds(run: Path) -> dict[str, float]:
    order = ["data", "distill", "eval", "bench", "report"]
    found = sorted((run / "stages").glob("*.json"), key=lambda p: [*order, p.stem].index(p.stem))
    return {p.stem: json.loads(p.read_text())["seconds"] for p in found}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--machine", required=True, help="where and how the run was made, for the caption")
    ap.add_argument("--full", type=Path, help="a `quickstart --full` run to show beside it")
    ap.add_argument("--full-machine", default="the same machine")
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    args = ap.parse_args()
    table = results_table(args.run)
    stages = stage_seconds(args.run)
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
            table,
            "",
            *(
                [
                    f"The longer recipe, `foundry3d quickstart --full` ({args.full_machine}; stage seconds: "
                    + ", ".join(f"{k} {v:.0f}" for k, v in stage_seconds(args.full).items())
                    + "), 4,000 distillation steps and the full protocols (3 part-segmentation head seeds):",
                    "",
                    results_table(args.full),
                    "",
                ]
                if args.full
                else []
            ),
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
