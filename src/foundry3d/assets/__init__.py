"""Files shipped inside the package: embedded teachers (release + model card), one folder each.

The hub (``foundry3d.models.hub``) names them: ``embedded`` is the default teacher.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent
