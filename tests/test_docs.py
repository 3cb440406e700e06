"""The documentation names tests that exist, and links nothing outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# a test function, or a test method of a contract class (src/pbtkit/*/testing.py)
_TEST_REFERENCE = re.compile(r"`((?:tests|src)/[\w/]+\.py)::(test_\w+)`")


def test_every_test_the_reliability_page_names_exists() -> None:
    page = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    references = _TEST_REFERENCE.findall(page)
    assert len(references) >= 20
    missing = [
        f"{path}::{name}"
        for path, name in references
        if not (ROOT / path).is_file()
        or not re.search(rf"^\s*def {name}\(", (ROOT / path).read_text(encoding="utf-8"), re.M)
    ]
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"


@pytest.mark.parametrize(
    "page",
    sorted(p.relative_to(ROOT).as_posix() for p in [ROOT / "README.md", *ROOT.glob("docs/*.md")]),
)
def test_no_link_leaves_the_repository(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)", text):
        if "://" in target:
            continue  # a web address, not a file
        resolved = (ROOT / page).parent / target
        assert resolved.resolve().is_relative_to(ROOT), (
            f"{page} links {target}, outside the repository"
        )
        assert resolved.exists(), f"{page} links {target}, which does not exist"
