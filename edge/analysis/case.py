"""The case: one slide of one patient, screened field by field, and its call.

A clinician's question is per slide: refer this patient or not. One benign field in eight
is called positive, so "any positive field" would refer most benign slides. The case call
counts the fields' own calls (the label the page shows, never the argmax) against a
binomial model of the field error rates measured on the bundle's validation split:

- ``q``, the chance a benign field is called positive, and ``s``, the chance a malignant
  field is called positive, both smoothed (add-one) and bounded (q >= 0.05, s <= 0.95) so that
  one site's near-perfect validation figures never make a single field decisive;
- with ``n`` decisive fields (called positive or negative) of which ``k`` are positive, the
  case is ``positive`` when a benign slide would give ``k`` or more positives with
  probability <= ``alpha`` (1%), ``negative`` when a malignant slide would give ``k`` or fewer
  with probability <= ``beta`` (0.5%; missing leukemia is the worse error), and
  ``uncertain`` in between. Where both hold, positive wins.
- ``min_fields`` is the smallest ``n`` at which both calls are possible; until then the
  case is ``pending`` and says how many more fields to analyse.
- **A negative call never outruns its parts** (issue 35): the binomial rule allows a few
  positive fields in a negative case (benign fields are called positive at rate ``q``), but a
  case shown "negative" while 2 of its 5 fields were positive and 45% of its white cells were
  called blasts reassures falsely. So a case the rule would clear is ``uncertain: refer for an
  expert read`` when any usable field is positive, or when the blasts reach
  ``NEGATIVE_BLAST_SHARE_LIMIT`` of the recognised white cells (model's count or reviewed
  count, whichever is higher). A negative call says what it rests on: "0 of 5 fields
  positive, 1 blast among 48 white cells". It only ever turns a negative into an uncertain.
- **The count** (issue 32, item 3), for a bundle whose rule carries one (``BlastCountRule``,
  fitted out of fold on every training block): a hematologist reports blasts among the white
  cells, not field votes, and counting them clears benign slides the field vote cannot (a benign
  slide's fields are each called positive now and then, so "no positive field" fails one benign
  case of 5 in four). The case is positive when the blasts reach ``refer_at`` of the recognised
  white cells (or the binomial count says positive), negative when they stay below
  ``clear_below`` over at least ``min_white_cells`` cells and no more than one field is positive
  (``MAX_POSITIVE_FIELDS_TO_CLEAR``), otherwise uncertain; the guard above gives way to it, and
  the negative text names a field that was read positive on its own and asks for its cells to be
  looked at. Both limits come from the smallest cases the rule decides, drawn
  within each patient-proxy block, the bootstrap resampling whole blocks, on the limit's safe
  side: a malignant case below ``clear_below`` is rarer than ``beta``.

The model assumes fields are independent; fields of one slide are not, so the rule is
checked empirically at case level (``blastscope-edge evaluate --case-size K``), and the
README states both.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Iterable, Mapping

from pydantic import Field

from edge.analysis.labels import BENIGN, DISPLAY_NAMES, NOT_A_WHITE_CELL, is_blast
from edge.settings import Int, Settings


class CasesConfig(Settings):
    # Usable fields before a case is called: 0 uses the bundle's case rule (fitted on
    # validation); a larger number asks for more fields, a smaller one is ignored.
    min_fields: Annotated[Int, Field(ge=0, le=100)] = 0


Q_FLOOR, S_CEILING = 0.05, 0.95
#: The blast share of the recognised white cells at or above which a case is never cleared.
#: A guard, not a fitted operating point: no blasts circulate in a healthy person's blood, but
#: the shipped cell model calls about 9% of the cells of the benign validation fields it
#: clears blasts (pooled; 25 of 274), and 25% stands over three standard deviations above that
#: at a 5-field case's ~50 cells, and far below its malignant validation fields (5th
#: percentile 60%). A hematologist reads every case at or above it.
NEGATIVE_BLAST_SHARE_LIMIT = 0.25
#: The most positive fields a case the count clears may hold. A benign slide's field is called
#: positive now and then (about one in twenty out of fold), so one positive field among many
#: benign-looking ones is what benign slides show; two are not (out of fold the guard moved benign
#: cases of 5 cleared from 89.8% to 89.5%),
#: and a B-ALL slide whose blasts sit in a few fields shows exactly that: two Pre-B fields beside
#: three benign ones read 5 blasts among 44 white cells (11%), which the count alone would clear
#: (``tests/analysis/test_case.py``, on real fields). A guard, not fitted.
MAX_POSITIVE_FIELDS_TO_CLEAR = 1
MAX_FIELDS = 200  # thresholds are computed up to here; a case never needs more


def _binom_pmf(k: int, n: int, p: float) -> float:
    return math.comb(n, k) * p ** k * (1 - p) ** (n - k)


def _upper_tail(c: int, n: int, p: float) -> float:
    """P(X >= c) for X ~ Binomial(n, p)."""
    return sum(_binom_pmf(k, n, p) for k in range(max(c, 0), n + 1))


def _lower_tail(c: int, n: int, p: float) -> float:
    """P(X <= c)."""
    return sum(_binom_pmf(k, n, p) for k in range(0, min(c, n) + 1))


@dataclass(frozen=True)
class BlastCountRule:
    """Blasts among the recognised white cells of a case: the count a differential reports."""

    clear_below: float  # a case is cleared when its blast share is below this ...
    refer_at: float  # ... and positive when it reaches this (>= clear_below)
    min_white_cells: int  # ... over at least this many recognised white cells
    fitted_on: str = ""
    fit: dict[str, Any] = field(default_factory=dict, compare=False)  # how it came out, for the model card

    def __post_init__(self) -> None:
        if not 0 < self.clear_below <= self.refer_at <= 1:
            raise ValueError("count rule needs 0 < clear_below <= refer_at <= 1")
        if self.min_white_cells < 1:
            raise ValueError("count rule needs min_white_cells >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BlastCountRule":
        return cls(float(data["clear_below"]), float(data["refer_at"]), int(data["min_white_cells"]),
                   str(data.get("fitted_on", "")), dict(data.get("fit") or {}))


@dataclass(frozen=True)
class CaseRule:
    field_fp_rate: float  # q
    field_tp_rate: float  # s
    alpha: float = 0.01
    beta: float = 0.005
    fitted_on: str = ""  # what the rates were measured on, for the report and the model card
    count: BlastCountRule | None = None  # a cell bundle's count rule, when one was fitted

    def __post_init__(self) -> None:
        if not 0 < self.field_fp_rate < self.field_tp_rate < 1:
            raise ValueError("case rule needs 0 < field_fp_rate < field_tp_rate < 1")
        if not (0 < self.alpha < 0.5 and 0 < self.beta < 0.5):
            raise ValueError("case rule alpha and beta must be in (0, 0.5)")

    @classmethod
    def fit(cls, benign_calls: Iterable[str], malignant_calls: Iterable[str], fitted_on: str,
            alpha: float = 0.01, beta: float = 0.005) -> "CaseRule":
        """From the field calls of labelled fields (``positive``/``negative``/``uncertain``;
        rejected and uncertain fields carry no count, as on the device)."""
        benign = [c for c in benign_calls if c in ("positive", "negative")]
        malignant = [c for c in malignant_calls if c in ("positive", "negative")]
        q = max((benign.count("positive") + 1) / (len(benign) + 2), Q_FLOOR)
        s = min((malignant.count("positive") + 1) / (len(malignant) + 2), S_CEILING)
        note = ""
        if s - q < 0.02:  # the fields do not separate: a rule that (nearly) never calls a case
            q, s = min(q, 0.49), max(s, 0.51)
            note = "; the fields do not separate, so only (nearly) unanimous fields call a case"
        return cls(round(q, 4), round(s, 4), alpha, beta,
                   f"{fitted_on}: {benign.count('positive')}/{len(benign)} benign fields called positive, "
                   f"{malignant.count('positive')}/{len(malignant)} malignant fields called positive{note}")

    def thresholds(self, n: int) -> tuple[int, int]:
        """(most positives still negative, fewest positives that are positive) for n fields;
        -1 / n+1 when that call is not possible at n."""
        positive_from = next((c for c in range(0, n + 1) if _upper_tail(c, n, self.field_fp_rate) <= self.alpha), n + 1)
        negative_to = max((c for c in range(0, n + 1) if _lower_tail(c, n, self.field_tp_rate) <= self.beta), default=-1)
        return negative_to, positive_from

    @property
    def min_fields(self) -> int:
        for n in range(1, MAX_FIELDS + 1):
            negative_to, positive_from = self.thresholds(n)
            if negative_to >= 0 and positive_from <= n:
                return n
        return MAX_FIELDS

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "min_fields": self.min_fields}
        if self.count is None:
            del data["count"]  # a bundle without one reads as before
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CaseRule":
        count = data.get("count")
        return cls(float(data["field_fp_rate"]), float(data["field_tp_rate"]), float(data.get("alpha", 0.01)),
                   float(data.get("beta", 0.005)), str(data.get("fitted_on", "")),
                   BlastCountRule.from_dict(count) if count else None)


def final_call(review: Mapping[str, Any] | None, model_call: str | None) -> str | None:
    """The call that stands: the clinician's review when there is one, else the model's."""
    return (review or {}).get("call") or model_call


#: What each case call asks the clinician to do.
NEXT_STEP = {
    "positive": "Refer for confirmatory testing (flow cytometry and a hematologist's review).",
    "negative": "Negative screen: {basis}. Screening aid only: a normal screen does not exclude leukemia.{looked}",
    "uncertain": "Analyse more fields or ask for an expert read.",
    "held": "Uncertain: refer for an expert read. Not cleared: {basis}.",
    "few_cells": "Analyse more fields: {white} white cell(s) counted, at least {need_cells} needed to call the case.",
    "pending": "Analyse {more} more usable field(s) before the case can be called.",
}


@dataclass(frozen=True)
class CaseCall:
    call: str  # positive | negative | uncertain | pending
    next_step: str
    fields: int  # usable (classified, not excluded) fields
    decisive: int
    positive: int
    negative: int
    uncertain: int
    rejected: int
    excluded: int
    fields_needed: int  # more usable fields before a call (0 once called)
    counts: dict[str, int]  # displayed label -> fields
    subtype_pattern: str | None  # what the positive fields point to
    rule: str  # the rule and thresholds applied, in words
    thresholds: dict[str, int] = field(default_factory=dict)
    #: A cell bundle's count over the usable fields, as a hematologist reports it: blasts
    #: among the white cells the model recognised ("34 blasts among 52 white cells in 10
    #: fields"); None for a field bundle.
    cells: dict[str, Any] | None = None
    #: More white cells before the count rule calls the case (pending on cells, not fields).
    cells_needed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pattern(labels: list[str]) -> str | None:
    subtypes = Counter(label for label in labels if label not in (BENIGN, "uncertain"))
    if not subtypes:
        return None
    total = sum(subtypes.values())
    parts = [f"{DISPLAY_NAMES.get(k, k)} {v}/{total}" for k, v in subtypes.most_common()]
    return "mostly " + parts[0] if subtypes.most_common(1)[0][1] / total >= 0.6 else "mixed: " + ", ".join(parts)


def differential(fields: Iterable[Mapping[str, Any]], reviewed: bool = False) -> dict[str, int]:
    """The white cells by class over ``fields``, as a hematologist's differential count: the
    model's classes (cells it recognised and did not read as "not a white cell"), or with
    ``reviewed`` each reviewer's class in place of the model's."""
    counts: Counter[str] = Counter()
    for record in fields:
        reviews = (record.get("cell_reviews") or {}) if reviewed else {}
        for i, cell in enumerate(record.get("cells") or []):
            review = reviews.get(str(i))
            label = review["label"] if review else cell.get("label")
            if (cell.get("familiar") or review) and label != NOT_A_WHITE_CELL:
                counts[str(label)] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def reviewed_count(fields: Iterable[Mapping[str, Any]]) -> tuple[int, int, int]:
    """Blasts and white cells with each reviewer's class in place of the model's where a cell
    was reclassified in the gallery (``differential(reviewed=True)``: a cell the model did not
    recognise counts once a reviewer classes it; one called "not a white cell" leaves the
    count), and how many were reviewed."""
    records = list(fields)
    counts = differential(records, reviewed=True)
    reviewed = sum(len(r.get("cell_reviews") or {}) for r in records)
    return sum(v for k, v in counts.items() if is_blast(k)), sum(counts.values()), reviewed


def case_call(fields: Iterable[Mapping[str, Any]], rule: CaseRule, min_fields: int | None = None) -> CaseCall:
    """The call for a case from its stored field records (``status``, ``call``, ``label``,
    ``excluded``). ``min_fields`` (from the config) may only raise the rule's minimum."""
    records = list(fields)
    excluded = sum(1 for r in records if r.get("excluded"))
    kept = [r for r in records if not r.get("excluded")]
    usable = [r for r in kept if r.get("status") == "classified"]
    rejected = len(kept) - len(usable)
    calls = Counter(r.get("call") for r in usable)
    k, neg, unc = calls["positive"], calls["negative"], calls["uncertain"]
    n = k + neg
    need = max(rule.min_fields, min_fields or 0)
    negative_to, positive_from = rule.thresholds(n)
    counts = Counter(str(r.get("label")) for r in usable)
    words = (f"binomial count of positive fields: positive at >= {positive_from} of {n}, negative at <= "
             f"{negative_to} of {n} (benign field false-positive rate {rule.field_fp_rate:g}, malignant field "
             f"detection rate {rule.field_tp_rate:g}; alpha {rule.alpha:g}, beta {rule.beta:g}; at least {need} fields)")
    if n < need:
        call = "pending"
    elif unc > n:
        call = "uncertain"  # more fields left uncertain than decided: not a basis for a call
    elif k >= positive_from:
        call = "positive"
    elif k <= negative_to:
        call = "negative"
    else:
        call = "uncertain"
    more = max(0, need - n) if call == "pending" else 0
    cells = _cell_count([r for r in usable if "white_cells" in r])
    basis = f"{k} of {n} field{'s' * (n != 1)} positive" + (f", {cells['summary']}" if cells else "")
    template = call
    looked = ""
    if rule.count is not None and cells is not None and call != "pending" and unc <= n:
        call, template, words, more = _counted(rule.count, call, cells, k, words)
        if call == "negative" and k:
            looked = (f" {k} field{'s' * (k != 1)} read positive on {'their' if k != 1 else 'its'} own: "
                      f"look at {'their' if k != 1 else 'its'} cells in the gallery.")
    elif call == "negative" and (k > 0 or _blast_share(cells) >= NEGATIVE_BLAST_SHARE_LIMIT):
        call, template = "uncertain", "held"
        words += (f"; not cleared while any field is positive or blasts reach "
                  f"{NEGATIVE_BLAST_SHARE_LIMIT:.0%} of the white cells")
    white = cells["white_cells"] if cells else 0
    need_cells = rule.count.min_white_cells if rule.count else 0
    return CaseCall(
        call=call, next_step=NEXT_STEP[template].format(n=n, more=more, basis=basis, looked=looked, white=white,
                                                        need_cells=need_cells),
        fields=len(usable), decisive=n,
        positive=k, negative=neg, uncertain=unc, rejected=rejected, excluded=excluded, fields_needed=more,
        counts={label: int(c) for label, c in counts.items()},
        subtype_pattern=_pattern([str(r["label"]) for r in usable if r.get("call") == "positive"]),
        rule=words, thresholds={"negative_at_most": negative_to, "positive_at_least": positive_from, "min_fields": need},
        cells=cells, cells_needed=need_cells - white if template == "few_cells" else 0,
    )


def _counted(count: BlastCountRule, binomial: str, cells: dict[str, Any], k: int,
             words: str) -> tuple[str, str, str, int]:
    """The call by the count: (call, next-step template, rule in words, more fields needed).
    Positive when the binomial count of fields says so or the model's blasts reach
    ``refer_at``; cleared only below ``clear_below`` of ``min_white_cells`` or more, on the
    higher of the model's and the reviewed share (a reviewer's blasts are never cleared away)."""
    white = int(cells["white_cells"])
    model_share = cells["blasts"] / white if white else 0.0
    words += (f"; blasts among the recognised white cells: positive at >= {count.refer_at:.0%}, negative below "
              f"{count.clear_below:.0%} of at least {count.min_white_cells} white cells")
    if binomial == "positive" or (white >= count.min_white_cells and model_share >= count.refer_at):
        return "positive", "positive", words, 0
    if white < count.min_white_cells:
        return "pending", "few_cells", words, 1
    if k > MAX_POSITIVE_FIELDS_TO_CLEAR:
        words += f"; not cleared while more than {MAX_POSITIVE_FIELDS_TO_CLEAR} field is positive"
        return "uncertain", "held", words, 0
    if _blast_share(cells) < count.clear_below:
        return "negative", "negative", words, 0
    return "uncertain", "held", words, 0


def _blast_share(cells: dict[str, Any] | None) -> float:
    """The higher of the model's and the reviewed blast share (0 without cells)."""
    if not cells:
        return 0.0
    shares = [cells["blasts"] / cells["white_cells"] if cells["white_cells"] else 0.0]
    if cells.get("reviewed_white_cells"):
        shares.append(cells["reviewed_blasts"] / cells["reviewed_white_cells"])
    return max(shares)


def _cell_count(with_cells: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Blasts among the recognised white cells over the fields that carry a count, model and
    reviewed (None for a field bundle)."""
    cells = None
    if with_cells:
        blasts, white = sum(int(r["blasts"]) for r in with_cells), sum(int(r["white_cells"]) for r in with_cells)
        reviewed_blasts, reviewed_white, reviewed = reviewed_count(with_cells)
        summary = (f"{blasts} blast{'s' * (blasts != 1)} among {white} white cell{'s' * (white != 1)}"
                   + (f" ({blasts / white:.0%})" if white else ""))
        cells = {"blasts": blasts, "white_cells": white, "fields": len(with_cells),
                 "blast_share": round(blasts / white, 4) if white else None, "summary": summary,
                 "text": f"{summary} in {len(with_cells)} field{'s' * (len(with_cells) != 1)}",
                 "differential": differential(with_cells)}
        if reviewed:
            cells.update(reviewed_cells=reviewed, reviewed_blasts=reviewed_blasts, reviewed_white_cells=reviewed_white,
                         reviewed_differential=differential(with_cells, reviewed=True),
                         reviewed_text=f"after review of {reviewed} cell{'s' * (reviewed != 1)}: {reviewed_blasts} "
                                       f"blast{'s' * (reviewed_blasts != 1)} among {reviewed_white} white cells")
    return cells
