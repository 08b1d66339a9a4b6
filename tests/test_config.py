from dataclasses import dataclass, field

import pytest

from foundry3d.config import ConfigError, load_config, parse_override, to_dict


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10
    pair: tuple[float, float] = (0.1, 0.2)


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    items: list[str] = field(default_factory=list)
    opt: int | None = None


def test_defaults_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: y\ninner:\n  steps: 5\n")
    cfg = load_config(Outer, p, ["inner.lr=0.5", "items=[a, b]", "inner.pair=[1, 2]", "opt=null"])
    assert cfg.name == "y" and cfg.inner.steps == 5 and cfg.inner.lr == 0.5
    assert cfg.items == ["a", "b"] and cfg.inner.pair == (1.0, 2.0) and cfg.opt is None
    assert to_dict(cfg)["inner"]["pair"] == [1.0, 2.0]


@pytest.mark.parametrize(
    "override, match",
    [
        ("inner.lrr=1", "unknown config key inner.lrr"),
        ("inner.steps=1.5", "integer"),
        ("bogus=1", "unknown"),
        ("inner.pair=[1]", "expected 2"),
    ],
)
def test_bad_keys_and_values_are_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Outer, None, [override])


def test_override_parsing():
    assert parse_override("a.b=1e-3") == ("a.b", 0.001)
    with pytest.raises(ConfigError):
        parse_override("novalue")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, "/no/such/file.yaml")


def test_a_partial_section_keeps_the_recipes_other_defaults():
    """`engine.steps=7` on distillation changes the steps only: batch, lr and checkpoints stay the distillation
    recipe's (they used to fall back to the engine's own defaults without a word)."""
    from foundry3d.config import describe_config, load_config
    from foundry3d.train.distill import DistillConfig

    base, changed = load_config(DistillConfig), load_config(DistillConfig, None, ["engine.steps=7"])
    assert changed.engine.steps == 7 and base.engine.steps == 2000
    assert (changed.engine.batch_size, changed.engine.lr, changed.engine.ckpt_every) == (64, 5e-4, 250)
    lines = describe_config(changed)
    assert "engine.steps: 7" in lines and any(ln.startswith("loss.beta: 1.0  # SmoothL1 beta") for ln in lines)


def test_the_recipes_partial_configs_resolve_and_read_back_as_their_settings():
    from foundry3d.config import load_config, partial_settings, to_dict
    from foundry3d.eval.suite import EvalConfig
    from foundry3d.quickstart import FULL, QUICK
    from foundry3d.study import StudyConfig
    from foundry3d.train.distill import DistillConfig

    pairs = [(DistillConfig, c) for c in (QUICK.distill, FULL.distill, StudyConfig().distill)]
    pairs += [(EvalConfig, c) for c in (QUICK.eval, FULL.eval)]
    for cls, cfg in pairs:
        settings = partial_settings(cfg)
        assert settings and to_dict(load_config(cls, None, settings)) == to_dict(load_config(cls, cfg)), cfg
    quick = load_config(DistillConfig, QUICK.distill)
    assert (quick.engine.steps, quick.data.cache_views, quick.probe.enabled) == (600, 1, False)
    assert all(":test" not in d and ":val" not in d for d in quick.data.datasets)  # never a held-out split
