"""The data-centre list the operator maintains, read at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.attribution.service import datacenter_networks


def test_datacenter_file(tmp_path: Path) -> None:
    path = tmp_path / "dc.txt"
    path.write_text("# AWS\n3.0.0.0/8\n\nnot-a-network\n2600:1f00::/24  # v6\n")
    networks = datacenter_networks(str(path))
    assert len(networks) == 2
    assert "3.1.2.3" in networks and "2600:1f00::9" in networks and "4.1.2.3" not in networks


def test_unset_file_is_an_empty_list() -> None:
    assert len(datacenter_networks(None)) == 0 and len(datacenter_networks("")) == 0


def test_missing_file_stops_the_service(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        datacenter_networks(str(tmp_path / "absent.txt"))
