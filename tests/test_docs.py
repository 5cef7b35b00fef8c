"""The README is the front door and every guide is reachable from it; no link in them points nowhere."""

import re

import pytest

from tests.conftest import ROOT

GUIDES = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_readme_is_short_and_names_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert first_block.strip().splitlines()[0].startswith("make run") and "make test" in first_block


def test_every_guide_is_linked_from_the_readme():
    linked = {ROOT / target for target in LINK.findall((ROOT / "README.md").read_text())}
    assert [guide.name for guide in GUIDES if guide not in linked] == []


@pytest.mark.parametrize("page", [ROOT / "README.md", *GUIDES], ids=lambda p: p.name)
def test_every_relative_link_points_to_a_file(page):
    broken = [target for target in LINK.findall(page.read_text())
              if not target.startswith(("http://", "https://")) and not (page.parent / target).exists()]
    assert broken == [], f"{page.name} links to missing {broken}"


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: p.name)
def test_each_guide_starts_with_what_a_user_does(page):
    lines = [line for line in page.read_text().splitlines() if line.strip()]
    assert lines[0].startswith("# ") and lines[1].startswith(("What you do", "What the pipeline", "What you see",
                                                              "Every path")), page.name
