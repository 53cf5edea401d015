"""Global options given after the subcommand (issue 15 item 20: ``--debug`` worked only before it)."""

from __future__ import annotations

import pytest

from edge.cli import _global_flags_first, main
from edge.errors import ConfigError


def test_debug_after_the_subcommand_shows_the_traceback(tmp_path):
    missing = tmp_path / "missing.yaml"
    # without --debug: one line and exit 2
    assert main(["run", "--config", str(missing), "--out", str(tmp_path / "o")]) == 2
    # --debug after the subcommand: the error is raised (traceback), not an argparse refusal
    with pytest.raises(ConfigError, match="missing.yaml"):
        main(["run", "--config", str(missing), "--out", str(tmp_path / "o"), "--debug"])


@pytest.mark.parametrize("argv, expected", [
    (["run", "--debug"], ["--debug", "run"]),
    (["-v", "run", "--frames", "3"], ["-v", "run", "--frames", "3"]),
    (["run", "--verbose", "--", "--debug"], ["--verbose", "run", "--", "--debug"]),
])
def test_global_flags_move_before_the_subcommand(argv, expected):
    assert _global_flags_first(argv) == expected
