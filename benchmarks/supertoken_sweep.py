"""The token-count sweep on its own (``foundry3d study paper`` runs the same as its part 6): s = 16 fixed, clouds
of more points and patch tokens, each kind's paired difference to DSO (:mod:`foundry3d.token_sweep`).

    python benchmarks/supertoken_sweep.py --out runs/sweep --record docs/study/sweep.json

A re-run skips the students and evaluations it already has (resume after a kill); with ``--ledger`` also those
recorded there by a run on another machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from foundry3d.errors import ConfigError
from foundry3d.files import atomic_write
from foundry3d.token_sweep import KINDS, SweepConfig, token_sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/sweep")
    ap.add_argument("--record", default="docs/study/sweep.json")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS))
    ap.add_argument("--before", action="store_true", help="also the DSO before the ladder's choice (foundry_before)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--teacher", default="embedded")
    ap.add_argument(
        "--recipe",
        default="distill/quickstart",
        help="the students' partial distillation config (distill/study: the one foundry3d study paper's part 6 uses, "
        "so that a study given this --out folder reuses these students)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--root-at",
        nargs="+",
        default=[],
        metavar="SIZE=FOLDER",
        help="a dataset cache folder for a size, e.g. 16384=~/.cache/foundry3d-16k (datasets built with more points)",
    )
    ap.add_argument(
        "--ledger",
        default=None,
        metavar="FOLDER",
        help="a committed folder of each student's results and costs (e.g. docs/study/ledger): a sweep resumed on "
        "another machine reads the students it lists instead of retraining them, when nothing they depend on changed",
    )
    a = ap.parse_args()
    try:
        roots = {int(k): v for k, v in (x.split("=", 1) for x in a.root_at)}
    except ValueError:
        raise SystemExit(f"supertoken_sweep: --root-at takes SIZE=FOLDER, got {a.root_at}") from None
    cfg = SweepConfig(
        sizes=a.sizes,
        seeds=a.seeds,
        kinds=a.kinds,
        before=a.before,
        steps=a.steps,
        roots=roots,
        ledger=a.ledger,
        threads=a.threads,
    )
    try:
        cfg.validate()
        record = token_sweep(cfg, Path(a.out), a.teacher, recipe=a.recipe)
    except ConfigError as e:
        raise SystemExit(f"supertoken_sweep: {e}") from None
    record["command"] = "python benchmarks/supertoken_sweep.py " + " ".join(
        [
            f"--sizes {' '.join(map(str, a.sizes))}",
            f"--seeds {' '.join(map(str, a.seeds))}",
            f"--kinds {' '.join(a.kinds)}",
            f"--steps {a.steps}",
            f"--threads {a.threads}",
            f"--teacher {a.teacher}",
            *([f"--recipe {a.recipe}"] if a.recipe != "distill/quickstart" else []),
            *([f"--root-at {' '.join(a.root_at)}"] if a.root_at else []),
            *([f"--ledger {a.ledger}"] if a.ledger else []),
        ]
        + (["--before"] if a.before else [])
    )
    atomic_write(a.record, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    print(f"wrote {a.record}")


if __name__ == "__main__":
    main()
