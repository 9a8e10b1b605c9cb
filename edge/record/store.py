"""The clinic record as the rest of the device sees it: one ``Store`` per state directory.

The record is split by concept (issue 34), each module the one owner of its concept:
``db`` (the connection, the lock, repair, schema and the public unit of work), ``rows`` (a
field's and a case's row and JSON), ``fields`` (saving and reading fields), ``cases`` (cases
and the rule that a signed-out case takes no change), ``retention``, ``audit`` (the chain and
its anchor), ``images``, ``export`` and ``verification``. ``Store`` is the database with the
fields and cases of it attached, and keeps the methods the daemon and the page call, each a
call into its owner, so the web, the device and the CLI import one name."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from edge.analysis.result import Result
from edge.record.cases import MISSING, Cases, locked_message
from edge.record.db import ACCEPTED, AUDIT_ANCHOR, DATABASE, IMAGES, QUARANTINE, Database, Reading, StoreConfig, UnitOfWork
from edge.record.errors import Locked, RecordDamaged, RecordError, SchemaNewer, Stale, StoreFull, is_full
from edge.record.fields import Fields
from edge.record.outbox import Outbox
from edge.record.retention import apply_retention
from edge.record.second_reads import SecondReads

__all__ = ["ACCEPTED", "AUDIT_ANCHOR", "DATABASE", "IMAGES", "MISSING", "QUARANTINE", "Locked", "Reading",
           "RecordDamaged", "RecordError", "SchemaNewer", "Stale", "Store", "StoreConfig", "StoreFull", "UnitOfWork", "is_full",
           "locked_message"]


class Store(Database):
    """The record database with its ``fields`` and ``cases``."""

    def __init__(self, state_dir: Path, cfg: StoreConfig = StoreConfig()) -> None:
        super().__init__(state_dir, cfg)
        self.fields = Fields(self)
        self.cases = Cases(self)
        self.outbox = Outbox(self)
        self.second_reads = SecondReads(self)

    def save(self, result: Result, case_id: int | None = None, client: str = "device") -> int:
        """``Fields.save``, then retention: what the policy allows goes only once the new field is in."""
        result_id = self.fields.save(result, case_id, client)
        self.apply_retention()
        return result_id

    def apply_retention(self) -> int:
        return apply_retention(self)

    # -- fields -------------------------------------------------------------------------------

    def get(self, result_id: int) -> dict[str, Any] | None:
        return self.fields.get(result_id)

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        return self.fields.recent(limit)

    def iter_between(self, start: float, end: float, batch: int = 200) -> Iterator[dict[str, Any]]:
        return self.fields.iter_between(start, end, batch)

    def between(self, start: float, end: float, limit: int = 100_000) -> list[dict[str, Any]]:
        return self.fields.between(start, end, limit)

    def file_path(self, result_id: int, kind: str) -> Path | None:
        return self.fields.file_path(result_id, kind)

    def count(self) -> int:
        return self.fields.count()

    def newest_created(self) -> float | None:
        return self.fields.newest_created()

    def mark_exported(self, result_ids: list[int], case_id: int | None, client: str, what: str) -> None:
        self.fields.mark_exported(result_ids, case_id, client, what)

    # -- cases --------------------------------------------------------------------------------

    def create_case(self, code: str, note: str, client: str) -> int:
        return self.cases.create(code, note, client)

    def get_case(self, case_id: int) -> dict[str, Any] | None:
        return self.cases.get(case_id)

    def case_summary(self, case_id: int) -> dict[str, Any] | None:
        return self.cases.summary(case_id)

    def list_cases(self, limit: int, offset: int, call: str | None = None) -> tuple[list[dict[str, Any]], int]:
        return self.cases.list(limit, offset, call)

    def set_case_call(self, case_id: int, call: str) -> None:
        self.cases.set_call(case_id, call)

    def sign_case(self, case_id: int, signature: dict[str, Any], client: str, seen: int,
                  district: bool = False) -> dict[str, Any] | None:
        return self.cases.sign(case_id, signature, client, seen, district)

    def amend_case(self, case_id: int, reason: str, client: str, seen: int) -> dict[str, Any] | None:
        return self.cases.amend(case_id, reason, client, seen)

    def review_cell(self, result_id: int, index: int, review: dict[str, Any], client: str, seen: int) -> Any:
        return self.cases.review_cell(result_id, index, review, client, seen)

    def review_result(self, result_id: int, review: dict[str, Any], client: str, seen: int | None = None) -> Any:
        return self.cases.review_field(result_id, review, client, seen)

    def review_case(self, case_id: int, review: dict[str, Any], client: str, seen: int | None = None) -> Any:
        return self.cases.review(case_id, review, client, seen)

    def exclude_result(self, result_id: int, reason: str, client: str) -> Any:
        return self.cases.exclude(result_id, reason, client)

    def include_result(self, result_id: int, client: str) -> Any:
        return self.cases.include(result_id, client)

    def exclusion(self, result_id: int) -> dict[str, Any] | None:
        return self.cases.exclusion(result_id)
