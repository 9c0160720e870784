"""Config resolution: defaults <- YAML <- CLI fields <- --set, types coerced, secrets redacted."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from facesift.common.config import bounded, resolve, save_config, secret, to_dict


@dataclasses.dataclass
class Model:
    arch: str = "resnet18"
    width: int = 64
    crops: tuple[int, ...] = (224, 96)


@dataclasses.dataclass
class Stage:
    model: Model = dataclasses.field(default_factory=Model)
    lr: float = 0.1
    amp: bool = True
    name: str | None = None
    out: Path = Path("work")
    api_secret: str | None = secret()


def test_defaults_work():
    cfg = resolve(Stage)
    assert cfg.model.arch == "resnet18" and cfg.lr == 0.1 and cfg.out == Path("work")


def test_precedence_yaml_then_fields_then_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"model": {"arch": "resnet50", "width": 32}, "lr": 0.5}))
    cfg = resolve(Stage, f, ["model.width=8", "amp=false", "model.crops=[64,32]"], lr=0.3)
    assert cfg.model.arch == "resnet50"       # from YAML
    assert cfg.model.width == 8               # --set beats YAML
    assert cfg.lr == 0.3                      # CLI field beats YAML
    assert cfg.amp is False
    assert cfg.model.crops == (64, 32)


def test_section_files_and_prefixed_set(tmp_path):
    f = tmp_path / "pipeline.yaml"
    f.write_text(yaml.safe_dump({"stage": {"lr": 2.0}, "other": {"x": 1}}))
    cfg = resolve(Stage, f, ["stage.model.arch=resnet34"], section="stage")
    assert cfg.lr == 2.0 and cfg.model.arch == "resnet34"


def test_unknown_keys_and_bad_types_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        resolve(Stage, None, ["model.depth=3"])
    with pytest.raises(ValueError, match="lr: expected float"):
        resolve(Stage, None, ["lr=fast"])
    f = tmp_path / "bad.yaml"
    f.write_text("lrr: 1\n")
    with pytest.raises(ValueError, match="lrr"):
        resolve(Stage, f)


def test_string_fields_keep_yaml_looking_values():
    cfg = resolve(Stage, None, ["name=0123", "model.arch=null"])
    assert cfg.name == "0123"                 # not YAML octal 83
    assert cfg.model.arch is None


def test_saved_config_redacts_secrets(tmp_path):
    cfg = resolve(Stage, None, ["api_secret=hunter2-very-secret"])
    assert cfg.api_secret == "hunter2-very-secret"
    path = save_config(cfg, tmp_path / "cfg.yaml")
    text = path.read_text()
    assert "hunter2" not in text and "***" in text
    assert to_dict(cfg)["api_secret"] == "***"
    assert yaml.safe_load(text)["model"]["arch"] == "resnet18"


# ---------------------------------------------------------------- ranges and whole numbers

@dataclasses.dataclass
class _Ranged:
    batch: int = bounded(32, 1)
    threshold: float = bounded(0.85, -1.0, 1.0)
    steps: int = 10


@pytest.mark.parametrize("override, message", [
    ("batch=0", "batch: 0 is out of range (must be at least 1)"),
    ("threshold=5", "threshold: 5.0 is out of range (must be between -1 and 1)"),
    ("threshold=nan", "threshold: NaN is not a value"),
    ("steps=1.5", "steps: expected a whole number, got 1.5"),
    ("steps=true", "steps: expected a whole number"),
])
def test_out_of_range_and_fractional_values_are_refused(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve(_Ranged, overrides=[override])


def test_whole_numbers_written_as_floats_are_accepted():
    assert resolve(_Ranged, overrides=["steps=2e3", "batch=4.0"]) == _Ranged(batch=4, steps=2000)
