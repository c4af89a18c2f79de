"""The docs a newcomer walks: a short README, a configuration reference that cannot go stale, links that resolve."""

import importlib.util
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")])

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", ROOT / "docs" / "gen_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prose_lines(text: str) -> list[str]:
    """Lines outside fenced code blocks, with inline code spans removed."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(CODE_SPAN.sub("", line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: links and emphasis reduced to their text, lowercase, punctuation other than
    '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"[*`]", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of ``page``, with GitHub's -1, -2 ... suffixes for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Relative links of ``page`` whose file does not exist (or lies outside the repository) and ``#anchors`` with
    no such heading in their target."""
    problems = []
    for lineno, line in enumerate(_prose_lines(page.read_text(encoding="utf-8")), 1):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:, data:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(root)} (prose line {lineno}): {target}"
            if not dest.is_relative_to(root) or not dest.exists():
                problems.append(f"{where}: no such file in the repository")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where}: no heading '#{anchor}' in {dest.relative_to(root)}")
    return problems


def test_readme_stays_under_200_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"


def test_configuration_reference_is_what_the_generator_writes_now():
    expected = _generator().render()
    actual = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/configuration.md is stale: run .venv/bin/python docs/gen_config_reference.py"


def _models(model: type[BaseModel], found: dict[str, type[BaseModel]]) -> dict[str, type[BaseModel]]:
    found[model.__name__] = model
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            a = stack.pop()
            if isinstance(a, type) and issubclass(a, BaseModel):
                if a.__name__ not in found:
                    _models(a, found)
            else:
                stack.extend(typing.get_args(a))
    return found


def test_every_config_field_is_in_the_reference():
    from molfed.config import RunConfig, SiteConfig

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    sections = {m.group(1): m.group(2) for m in re.finditer(r"^### (\w+)\n(.*?)(?=^##|\Z)", text, re.M | re.S)}
    models = _models(SiteConfig, _models(RunConfig, {}))
    missing = [
        f"{name}.{field}"
        for name, model in models.items()
        for field in model.model_fields
        if f"| `{field}` |" not in sections.get(name, "")
    ]
    assert len(models) >= 15  # RunConfig, SiteConfig, SitePolicy and the nested sections
    assert not missing, f"not in docs/configuration.md: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page):
    assert not broken_links(page)


def test_the_link_check_finds_a_broken_file_and_a_broken_anchor(tmp_path):
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "guide.md").write_text("# Guide\n\n## Bad input\n\n## Shared trunk + private heads\n")
    page = root / "README.md"
    page.write_text(
        "[ok](docs/guide.md#bad-input) [ok](docs/guide.md#shared-trunk--private-heads) [ok](#readme)\n"
        "[web](https://example.org/x#y) `[code](missing.md)`\n\n```\n[fenced](missing.md)\n```\n# README\n"
    )
    assert broken_links(page, root) == []
    page.write_text("# README\n[file](docs/missing.md) [anchor](docs/guide.md#bad-inputs) [self](#nope)\n")
    assert len(broken_links(page, root)) == 3
    (tmp_path / "elsewhere.md").write_text("# x\n")
    page.write_text("[outside the repository](../elsewhere.md)\n")
    assert len(broken_links(page, root)) == 1


def test_slugs_follow_github():
    assert slug("Never lose a run: checkpoints, resume, partner failures, determinism") == (
        "never-lose-a-run-checkpoints-resume-partner-failures-determinism"
    )
    assert slug("Shared trunk + private heads") == "shared-trunk--private-heads"
    assert slug("Privacy: utility and membership inference") == "privacy-utility-and-membership-inference"
    assert slug("`secure_aggregation` and [DP](x.md)") == "secure_aggregation-and-dp"
