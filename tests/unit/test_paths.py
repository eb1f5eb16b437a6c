"""Source paths stay inside the configured data root."""

from __future__ import annotations

from pathlib import Path

import pytest

from dms.errors import FatalError
from dms.operators.base import resolve_data_path


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    (root / "crm").mkdir(parents=True)
    (root / "crm" / "accounts.csv").write_text("id\n1\n")
    (tmp_path / "secret.csv").write_text("x\n")
    monkeypatch.setenv("DMS_DATA_ROOT", str(root))
    return root


def test_relative_path_resolves_inside_the_data_root(data_root: Path) -> None:
    assert resolve_data_path("crm/accounts.csv") == data_root / "crm" / "accounts.csv"


@pytest.mark.parametrize("path", ["../secret.csv", "crm/../../secret.csv", "/etc/passwd"])
def test_path_that_leaves_the_data_root_is_refused(data_root: Path, path: str) -> None:
    with pytest.raises(FatalError, match="leaves the data root"):
        resolve_data_path(path)


def test_symlink_out_of_the_data_root_is_refused(data_root: Path) -> None:
    (data_root / "crm" / "link.csv").symlink_to(data_root.parent / "secret.csv")
    with pytest.raises(FatalError, match="leaves the data root"):
        resolve_data_path("crm/link.csv")


def test_missing_file_names_the_path_and_the_root(data_root: Path) -> None:
    with pytest.raises(FatalError, match=r"'crm/nope.csv' not found under the data root"):
        resolve_data_path("crm/nope.csv")
