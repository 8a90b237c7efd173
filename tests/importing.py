"""Shared by the tests of `--mode=import` (score_sde's and ADM's checkpoints)."""

import pytest

from sde_gen import experiments


def assert_import_refused(tmp_path, config, error, match):
    """`experiments.run("import")` fails with one line of `error` (a `UserError`) matching
    `match`, and leaves no workdir behind."""
    workdir = tmp_path / "run"
    with pytest.raises(error, match=match) as caught:
        experiments.run("import", experiments.load(config), str(workdir))
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, experiments.UserError)
    assert not workdir.exists()  # refused before anything was written
