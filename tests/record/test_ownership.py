"""One owner per concept (issue 34): no module reaches into another's private state. Site
verification reached into the store's connection, lock and transaction 32 times and kept its
own copy of the case INSERT; now it uses the store's public unit of work. import-linter checks
which modules import which, not which attributes they touch, so this test reads the code."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edge."):
            found += [f"{path.name}:{node.lineno} imports {a.name} from {node.module}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"{path.name}:{node.lineno} touches {ast.unparse(node)}")
    return found


def test_no_module_of_the_record_or_the_web_touches_anothers_private_state():
    offences = []
    for folder in ("edge/record", "edge/web"):
        for path in sorted((ROOT / folder).glob("*.py")):
            offences += _offences(path)
    # none: the unit of work and the reading hold the connection themselves (edge.record.db)
    allowed: set[str] = set()
    assert [o for o in offences if o.split(":")[0] not in allowed] == []


def test_the_check_finds_a_reach_into_the_store(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f(store):\n    with store._lock:\n        return store._db.execute('SELECT 1')\n"
                       "from edge.record.store import _inserted_id\n")
    assert len(_offences(planted)) == 3
