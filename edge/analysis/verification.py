"""Site verification: whether the device's case calls agree with a laboratory's known slides
well enough, judged against acceptance criteria fixed before the first slide is read.

A laboratory verifies a qualitative method on its own samples before it reports with it
(CLSI EP12's design: known positive and negative samples, agreement with 95% intervals).
The figures here are case-level, because the device's answer per slide is what a clinic acts
on. An "uncertain" call sends the slide to a hematologist, so it counts as a referral: it
detects a positive slide (the slide is read by a person, nothing is missed) and is a false
alarm on a negative one. That is the reading that cannot flatter the device.

The lower bounds are Wilson score intervals. With the default 20 positive slides the
highest lower bound possible is 0.839 (20 of 20), so the default sensitivity bound, 0.80,
means no positive slide may be missed at 20 (29 of 30 also passes, 0.833); the specificity
bound, 0.65, allows 2 false alarms in 20 negative slides (18 of 20 gives 0.699, 17 of 20 0.640).
A screening aid may send extra slides to a hematologist; it may not miss one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Iterable

from pydantic import Field

from edge.settings import Float, Settings

#: The truth a verification slide can carry, and the kinds of negative slides that make a
#: verification meaningful: hematogone-rich and reactive smears are where benign lymphoid
#: cells look most like blasts.
TRUTHS = ("positive", "negative")
CHALLENGING = ("hematogone-rich", "reactive")
KINDS = ("", *CHALLENGING)
NOT_VERIFIED = "not verified at this site"


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default; sensible near 0 and 1 and
    for small n); NaN when n is 0. Written out because it is four lines and the device has no
    statistics library (the evaluation commands use this one too)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class Criteria(Settings):
    """Acceptance criteria, fixed when a verification starts (the record keeps them)."""

    min_positive: Annotated[int, Field(ge=1, le=1000)] = 20
    min_negative: Annotated[int, Field(ge=1, le=1000)] = 20
    #: negative slides that are hematogone-rich or reactive, among min_negative
    min_challenging: Annotated[int, Field(ge=0, le=1000)] = 5
    sensitivity_lower: Annotated[Float, Field(ge=0.0, le=0.99)] = 0.80
    specificity_lower: Annotated[Float, Field(ge=0.0, le=0.99)] = 0.65

    def below_floor(self) -> list[str]:
        """Where these criteria ask less than the defaults, which are the floor (issue 33: a
        verification once passed on 1 positive and 1 negative slide with bounds of 0): lower
        criteria need a second admin's confirmation and are printed wherever the verification
        is named."""
        floor = Criteria()
        out = []
        for name, words in (("min_positive", "positive slides"), ("min_negative", "negative slides"),
                            ("min_challenging", "hematogone-rich or reactive slides")):
            if getattr(self, name) < getattr(floor, name):
                out.append(f"{getattr(self, name)} {words} (floor {getattr(floor, name)})")
        for name, words in (("sensitivity_lower", "sensitivity bound"), ("specificity_lower", "specificity bound")):
            if getattr(self, name) < getattr(floor, name):
                out.append(f"{words} {100 * getattr(self, name):.0f}% (floor {100 * getattr(floor, name):.0f}%)")
        return out

    def text(self) -> str:
        """The criteria in a few words, as a banner or an export prints lowered ones."""
        return (f"{self.min_positive} positive and {self.min_negative} negative slides, bounds "
                f"{100 * self.sensitivity_lower:.0f}% sensitivity and {100 * self.specificity_lower:.0f}% specificity")


@dataclass(frozen=True)
class Slide:
    """One known slide of a verification, as the record holds it."""

    case_id: int
    code: str
    truth: str  # positive | negative
    kind: str  # "" or one of CHALLENGING
    call: str | None  # the device's case call, frozen when the slide was marked done

    @property
    def done(self) -> bool:
        return self.call is not None

    @property
    def agrees(self) -> bool | None:
        """Whether the call agrees with the truth; uncertain counts as positive (a referral)."""
        if self.call is None:
            return None
        return (self.call in ("positive", "uncertain")) == (self.truth == "positive")


@dataclass(frozen=True)
class Rate:
    """A proportion with its 95% Wilson interval."""

    successes: int
    n: int
    low: float
    high: float

    @classmethod
    def of(cls, successes: int, n: int) -> "Rate":
        low, high = wilson_interval(successes, n) if n else (0.0, 1.0)  # no slides: anything
        return cls(successes, n, round(low, 4), round(high, 4))

    @property
    def value(self) -> float | None:
        return None if self.n == 0 else self.successes / self.n

    def text(self) -> str:
        if self.n == 0:
            return "no slides yet"
        return f"{self.successes} of {self.n} ({100 * self.successes / self.n:.1f}%, 95% CI " \
               f"{100 * self.low:.1f}-{100 * self.high:.1f}%)"


@dataclass(frozen=True)
class Outcome:
    """Where a verification stands against its criteria."""

    sensitivity: Rate
    specificity: Rate
    positive_done: int
    negative_done: int
    challenging_done: int
    uncertain: int  # slides called uncertain (counted as referrals)
    pending: int  # slides entered and not yet marked done
    passed: bool
    problems: list[str] = field(default_factory=list)  # why it does not pass (yet)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sensitivity"]["text"] = self.sensitivity.text()
        d["specificity"]["text"] = self.specificity.text()
        return d


def evaluate(slides: Iterable[Slide], criteria: Criteria) -> Outcome:
    """The verification's figures from its done slides, and every criterion it does not meet."""
    slides = list(slides)
    done = [s for s in slides if s.done]
    positives = [s for s in done if s.truth == "positive"]
    negatives = [s for s in done if s.truth == "negative"]
    challenging = [s for s in negatives if s.kind in CHALLENGING]
    sensitivity = Rate.of(sum(1 for s in positives if s.agrees), len(positives))
    specificity = Rate.of(sum(1 for s in negatives if s.agrees), len(negatives))
    problems = []
    if len(positives) < criteria.min_positive:
        problems.append(f"{len(positives)} of the {criteria.min_positive} positive slides needed are done")
    if len(negatives) < criteria.min_negative:
        problems.append(f"{len(negatives)} of the {criteria.min_negative} negative slides needed are done")
    if len(challenging) < criteria.min_challenging:
        problems.append(f"{len(challenging)} of the {criteria.min_challenging} hematogone-rich or reactive "
                        "negative slides needed are done")
    if positives and sensitivity.low < criteria.sensitivity_lower:
        missed = len(positives) - sensitivity.successes
        problems.append(f"sensitivity {sensitivity.text()}: its lower bound is below "
                        f"{100 * criteria.sensitivity_lower:.0f}% ("
                        + (f"{missed} positive slide(s) called negative)" if missed else
                           "none missed: more positive slides are needed to reach it)"))
    if negatives and specificity.low < criteria.specificity_lower:
        alarms = len(negatives) - specificity.successes
        problems.append(f"specificity {specificity.text()}: its lower bound is below "
                        f"{100 * criteria.specificity_lower:.0f}% ({alarms} negative slide(s) called positive or "
                        "uncertain)")
    return Outcome(sensitivity=sensitivity, specificity=specificity, positive_done=len(positives),
                   negative_done=len(negatives), challenging_done=len(challenging),
                   uncertain=sum(1 for s in done if s.call == "uncertain"),
                   pending=len(slides) - len(done), passed=not problems, problems=problems)


@dataclass(frozen=True)
class FieldFigures:
    """What the device saw over a set of fields: how many it refused, how many as unlike the
    training slides, and where the classified fields' malignant probabilities lie. Kept at
    a verification as the baseline and measured again each week: a new stain lot, a lamp or a
    camera that drifts shows there before anyone sees it in the calls."""

    fields: int
    rejected: int
    out_of_distribution: int
    probability_quartiles: tuple[float, float, float] | None  # of the classified fields

    @classmethod
    def of(cls, records: Iterable[dict[str, Any]], ood_reason: str) -> "FieldFigures":
        n = rejected = ood = 0
        probabilities = []
        for r in records:
            n += 1
            if r.get("status") == "rejected":
                rejected += 1
                ood += any(str(x).startswith(ood_reason[:40]) for x in r.get("reasons", []))
            elif r.get("malignant_probability") is not None:
                probabilities.append(float(r["malignant_probability"]))
        quartiles = None
        if probabilities:
            s = sorted(probabilities)
            quartiles = tuple(round(s[min(len(s) - 1, int(q * len(s)))], 4) for q in (0.25, 0.5, 0.75))
        return cls(n, rejected, ood, quartiles)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FieldFigures":
        q = d.get("probability_quartiles")
        return cls(int(d["fields"]), int(d["rejected"]), int(d["out_of_distribution"]),
                   tuple(q) if q else None)  # type: ignore[arg-type]


#: Fewer fields than this in a week say nothing about drift.
DRIFT_MIN_FIELDS = 30


def drift(baseline: FieldFigures, week: FieldFigures) -> list[str]:
    """What changed since the verification, in words (empty: nothing beyond chance). A rate is
    flagged when it rose by more than 10 points and more than three standard errors of the
    week's count; the median probability when it moved by more than 0.25. Rates rising is what
    matters: a device that refuses or doubts more than at verification is seeing other slides."""
    if week.fields < DRIFT_MIN_FIELDS or baseline.fields == 0:
        return []
    found = []
    for name, then, now in (("rejected", baseline.rejected, week.rejected),
                            ("refused as unlike the training slides", baseline.out_of_distribution,
                             week.out_of_distribution)):
        p0, p1 = then / baseline.fields, now / week.fields
        se = math.sqrt(max(p0 * (1 - p0), 1e-4) / week.fields)
        if p1 - p0 > max(0.10, 3 * se):
            found.append(f"{100 * p1:.0f}% of this week's fields {name}, against {100 * p0:.0f}% at verification")
    if baseline.probability_quartiles and week.probability_quartiles:
        m0, m1 = baseline.probability_quartiles[1], week.probability_quartiles[1]
        if abs(m1 - m0) > 0.25:
            found.append(f"the median malignant probability of this week's fields is {m1:.2f}, "
                         f"against {m0:.2f} at verification")
    return found
