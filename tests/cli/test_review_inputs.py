"""Bad values on input paths added this session give one line, not a traceback."""

from __future__ import annotations

import json

import pytest

from edge.cli import main
from edge.errors import DataFormatError


def _line(capsys, command):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"hsi-edge {command}: error: "), err
    return err


@pytest.mark.parametrize("hours", ["nan", "-1", "1e12"])
def test_calibrate_field_valid_hours_is_checked_before_the_camera_moves(tmp_path, capsys,
                                                                        hours):
    rc = main(["calibrate", "field", "--out", str(tmp_path / "rec"), "--non-interactive",
               "--preset", "snapshot16", "--rows", "8", "--cols", "8", "--valid-hours", hours])
    assert rc == 2
    assert "--valid-hours: expected hours in (0, 8784] (one year)" in _line(capsys, "calibrate")
    assert not (tmp_path / "rec").exists()


def test_corpus_compare_refuses_a_record_that_is_not_one(tmp_path):
    from edge.corpus.compare import load_run

    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "x.json").write_text(json.dumps([1, 2]))
    with pytest.raises(DataFormatError, match=r"x\.json: not a corpus result record"):
        load_run(tmp_path, "A")


def test_selftest_names_a_damaged_release_file(tmp_path):
    from deploy.selftest import _json
    from edge.errors import BundleError

    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest\.json: cannot read the release's "
                                          r"manifest\.json"):
        _json(tmp_path / "manifest.json")
