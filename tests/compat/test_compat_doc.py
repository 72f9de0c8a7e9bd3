"""docs/compat.md names, for each difference from an original, the test that pins it: every such
`file::test` must exist (a renamed or moved test would otherwise leave the page pointing nowhere)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "compat.md").read_text()


def pinned_tests():
    """(file, test) pairs: `tests/x.py::a` and its continuations `, ::b` on the same file."""
    pairs = []
    for match in re.finditer(r"(tests/[\w/]+\.py)((?:(?:, )?::\w+)+)", DOC):
        pairs += [(match.group(1), name) for name in re.findall(r"::(\w+)", match.group(2))]
    return pairs


def test_every_pinning_test_exists():
    pairs = pinned_tests()
    assert len(pairs) >= 40
    missing = [f"{path}::{name}" for path, name in pairs
               if not (ROOT / path).is_file()
               or not re.search(rf"^(?:async )?def {name}\(", (ROOT / path).read_text(), re.M)]
    assert not missing, f"docs/compat.md names tests that do not exist: {missing}"
