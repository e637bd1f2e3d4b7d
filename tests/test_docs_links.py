"""No shipped text points at a file that is not in the repository: markdown links in the docs, and
`docs/*.md`, `csrc/...`, `ccfg/...`, `tests/...` paths named in docs, docstrings and C comments."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEXTS = ([ROOT / "README.md", ROOT / "CONTRIBUTING.md"] + sorted((ROOT / "docs").glob("*.md"))
         + sorted((ROOT / "ccfg").glob("*.py")) + sorted((ROOT / "csrc").rglob("*.[ch]")))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
PATH = re.compile(r"(?<![\w/.-])((?:docs|csrc|ccfg|tests|benchmarks|tools|shaders)/[\w./-]*\w)")


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_files_exist(path):
    text = path.read_text(encoding="utf-8")
    missing = []
    for m in (LINK.finditer(text) if path.suffix == ".md" else ()):
        target = m.group(1)
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (path.parent / target).exists():
            missing.append(target)
    for m in PATH.finditer(text):
        target = m.group(1).rstrip(".")
        # templates (csrc/rules/NAME.c) and globs are not file names
        if any(c in target for c in "*{}") or "NAME" in target or target.endswith(("/", "_")):
            continue
        if not (ROOT / target).exists() and not (ROOT / target).parent.joinpath(
                pathlib.Path(target).name + ".py").exists():
            missing.append(target)
    assert not missing, f"{path.relative_to(ROOT)} names files that do not exist: {missing}"


def test_no_unshipped_methods_notes():
    for path in TEXTS:
        text = path.read_text(encoding="utf-8")
        assert "design notes" not in text or path.name == "methods.md", path
        for m in re.finditer(r"[\w/.]*methods\.md", text):
            assert m.group(0) in ("docs/methods.md", "methods.md") and (
                m.group(0) == "docs/methods.md" or path.parent.name == "docs"), (path, m.group(0))
