"""The README is short and every link in it and in docs/ leads somewhere; the MQTT page names
every schema the package ships."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading slugs: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= 10 * 1024
    first_screen = "\n".join(text.splitlines()[:30])
    assert "make demo" in first_screen and "make test" in first_screen and "python3-venv" in first_screen


def test_every_link_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+://", target):
                continue  # no network here: outside links are not followed
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists() or (anchor and anchor not in anchors(resolved)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_link_check_catches_a_broken_link(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](#title) [missing](nowhere.md)\n")
    targets = LINK.findall(page.read_text())
    assert targets == ["#title", "nowhere.md"] and "title" in anchors(page)
    assert not (page.parent / "nowhere.md").exists()


def test_the_mqtt_page_links_every_schema():
    text = (ROOT / "docs" / "mqtt.md").read_text(encoding="utf-8")
    schemas = sorted(p.name for p in (ROOT / "edge" / "schemas").glob("*.json"))
    assert len(schemas) >= 9
    assert [name for name in schemas if f"(../edge/schemas/{name})" not in text] == []


def test_the_layout_picture_names_every_folder_and_only_those():
    """docs/architecture.md's tree: each `name/` under edge/ and convert/ is a folder of the code."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    picture = text.split("```text", 1)[1].split("```", 1)[0]
    drawn: dict[str, set[str]] = {}
    package = ""
    for line in picture.splitlines():
        if top := re.match(r"^(\w+)/\s", line):
            package = top.group(1)
            drawn[package] = set()
        elif room := re.match(r"^[├└]── (\w+)/", line):
            drawn[package].add(room.group(1))
    real = {
        package: {p.name for p in (ROOT / package).iterdir() if p.is_dir() and not p.name.startswith("__")}
        for package in ("edge", "convert")
    }
    assert drawn == real
