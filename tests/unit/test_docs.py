"""The README's configuration table names every setting, and nothing that is not one."""

from __future__ import annotations

import re
from pathlib import Path

from libs.runtime.settings import PlatformSettings

README = Path(__file__).resolve().parents[2] / "README.md"
NOT_SETTINGS = {"HODHOD_VAR_DIR", "HODHOD_TEST_DATABASE_URL"}


def documented() -> set[str]:
    table = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(HODHOD_[A-Z0-9_]+)`", table))


def test_every_setting_is_in_the_readme() -> None:
    names = {f"HODHOD_{name.upper()}" for name in PlatformSettings.model_fields}
    assert names - documented() == set()


def test_the_readme_documents_no_phantom_setting() -> None:
    names = {f"HODHOD_{name.upper()}" for name in PlatformSettings.model_fields}
    assert documented() - names - NOT_SETTINGS == set()
