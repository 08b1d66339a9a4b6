"""Foundry student (DSO -> encoder -> CAU, optional gate). Filled in by the distillation issue."""
