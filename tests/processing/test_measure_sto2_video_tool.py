"""tools/measure_sto2_video.py: the measurement behind the README's StO2-on-video figures
(issue 14) scores what it should, takes the species and table options, and answers a bad
option in one line."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "measure_sto2_video.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("measure_sto2_video", _TOOL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _run(tool, capsys, *extra):
    assert tool.main(["--presets", "snapshot16", "--seeds", "0", "--configs", "spatial",
                      "--frames", "2", "--warmup", "1", "--rows", "40", "--cols", "48",
                      *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_species_and_floor_reach_the_run(tool, capsys):
    """The human scene is another scene (its pigment moves the error); a higher blood floor
    withholds more pixels on the same frames."""
    pig = _run(tool, capsys)
    human = _run(tool, capsys, "--species", "human")
    assert 0 < pig["valid"] <= 1 and 0 < human["valid"] <= 1
    assert pig["mae"] != human["mae"]
    strict = _run(tool, capsys, "--min-blood-volume", "0.02")
    assert strict["valid"] < pig["valid"]
    assert np.isfinite(strict["mae"])


@pytest.mark.parametrize("extra, match", [
    (("--species", "martian"), "species: expected one of pig, human, rat"),
    (("--sto2-table", "humna"), "processing.sto2_table: no shipped table 'humna'"),
])
def test_bad_option_is_one_line(tool, capsys, extra, match):
    with pytest.raises(SystemExit) as exc:
        tool.main(["--presets", "snapshot16", "--seeds", "0", "--frames", "2", "--warmup", "1",
                   "--rows", "40", "--cols", "48", *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert match in err[-1] and "Traceback" not in "\n".join(err)
