"""The one base class of every error foundry3d raises on purpose.

The CLI prints these as one line (exit 2); anything else is a bug and shows its traceback.
Each subclass also derives from the built-in class it refines (ValueError, RuntimeError, ...), so
``except ValueError`` around foundry3d calls keeps working.
"""

from __future__ import annotations


class Foundry3DError(Exception):
    """Base of every deliberate foundry3d error: a user input, file or state we cannot use."""
