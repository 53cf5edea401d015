"""The YAML config loader: every kind of failure names file, key path, expected and got."""

from dataclasses import dataclass
from typing import Literal

import pytest

from edge.core.config import from_mapping, load_config, setting, to_mapping
from edge.errors import ConfigError
from edge.pipeline.config import AppConfig, load_app_config


@dataclass(frozen=True)
class Inner:
    exposure_us: float = setting(1000.0, range=(1, 1e6))
    count: int = setting(3, range=(1, 10))
    mode: Literal["a", "b"] = "a"
    enabled: bool = True
    bands: tuple[int, ...] = (1, 2)
    name: str | None = None


@dataclass(frozen=True)
class Outer:
    inner: Inner = setting(default_factory=Inner)
    required: str = "x"


def test_defaults_and_values():
    cfg = from_mapping(Outer, {"inner": {"exposure_us": 5, "bands": [3], "name": "n"}})
    assert cfg.inner == Inner(exposure_us=5.0, bands=(3,), name="n")
    assert isinstance(cfg.inner.exposure_us, float)
    assert to_mapping(cfg)["inner"]["bands"] == [3]


@pytest.mark.parametrize("data, message", [
    ({"inner": {"exposure_us": -5}}, r"f.yaml: inner.exposure_us: expected a number in \[1, 1e\+06\], got -5.0"),
    ({"inner": {"count": 2.5}}, r"inner.count: expected an integer in \[1, 10\], got 2.5"),
    ({"inner": {"count": True}}, r"inner.count: expected an integer"),
    ({"inner": {"mode": "c"}}, r"inner.mode: expected one of 'a', 'b', got 'c'"),
    ({"inner": {"enabled": "yes"}}, r"inner.enabled: expected true or false, got 'yes'"),
    ({"inner": {"bands": [1, "x"]}}, r"inner.bands\[1\]: expected an integer, got 'x'"),
    ({"inner": {"bands": 3}}, r"inner.bands: expected a list of an integer, got 3"),
    ({"inner": {"colour": 1}}, r"inner.colour: unknown key; allowed keys: bands, count, enabled"),
    ({"inner": 5}, r"inner: expected a mapping, got 5"),
    ({"inner": {"exposure_us": float("inf")}}, r"expected a finite number"),
    ([1, 2], r"<top>: expected a mapping"),
])
def test_each_failure_names_key_expected_and_got(data, message):
    with pytest.raises(ConfigError, match=message):
        from_mapping(Outer, data, source="f.yaml")


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"missing.yaml: config file not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("inner: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML at line \d+, column \d+"):
        load_config(Outer, bad)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match=r"bin.yaml: cannot read config file"):
        load_config(Outer, binary)


def test_empty_file_means_defaults(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert load_config(Outer, p) == Outer()


def test_app_config_defaults_and_errors(tmp_path):
    assert load_app_config(None) == AppConfig()
    p = tmp_path / "run.yaml"
    p.write_text("camera:\n  preset: hyperion\n")
    with pytest.raises(ConfigError, match=r"run.yaml: camera.preset: expected one of 'tivita'"):
        load_app_config(str(p))
    p.write_text("processing:\n  backend: opencl\n")
    with pytest.raises(ConfigError, match=r"processing.backend: expected one of 'auto', 'numpy', 'native', 'cuda', got 'opencl'"):
        load_app_config(str(p))


# -- the shared YAML reader: duplicate keys, depth, no echo of file contents (issue 15) ------

def test_duplicate_keys_are_refused_with_line(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("inner:\n  count: 2\n  mode: a\n  count: 3\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: not valid YAML at line 4, column 3: "
                                          r"duplicate key 'count' \(first at line 2\)"):
        load_config(Outer, p)
    top = tmp_path / "top.yaml"
    top.write_text("required: a\nrequired: b\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'required'"):
        load_config(Outer, top)
    # a merge key is not a duplicate: explicit keys override merged ones, as YAML says
    merge = tmp_path / "merge.yaml"
    merge.write_text("base: &b {count: 2, mode: a}\ninner:\n  <<: *b\n  count: 4\n")
    from edge.core.config import load_yaml
    assert load_yaml(merge)["inner"] == {"count": 4, "mode": "a"}


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, "a:\n" + "".join(
    " " * i + "a:\n" for i in range(1, 3000)), "x: " + "[" * 70 + "]" * 70])
def test_deeply_nested_yaml_is_one_line_error(tmp_path, text):
    p = tmp_path / "deep.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=r"deep.yaml: not valid as a config file: lists/"
                                          r"mappings nested deeper than 64 levels"):
        load_config(Outer, p)


def test_wrong_file_is_not_echoed(tmp_path):
    """A config key pointed at the wrong file (say /etc/passwd) must not print its lines."""
    p = tmp_path / "passwd"
    p.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/bin/sh\n")
    with pytest.raises(ConfigError) as info:
        load_config(Outer, p)
    assert "root:x" not in str(info.value) and "daemon" not in str(info.value)
    assert "expected a mapping, got a str (is it the right file?)" in str(info.value)
