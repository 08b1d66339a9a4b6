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
