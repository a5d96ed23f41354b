"""Probable causes: why a settlement credit differs from what its sales should have paid.

Pure: the standard library and numpy, no I/O, no clock. The reconciler calls :func:`explain`
once per under- or over-paid credit (rare), with plain data: the sales the credit pays, the fee
agreed per channel, the credit, and the refunds and reversals of sales paid before that the
acquirer may have netted into it. The answer is ``(cause, detail)``: a cause name (as in
``Finding.probable_cause``) and a plain JSON dict for the finding's evidence.

Theory of operation
===================

A credit is one equation. With ``captured`` the sale after reversals (nothing if declined),
``r_c`` the fee rate (bps) charged on channel ``c`` and ``fee(a, r) = min(round_half_up(a * r /
10,000), cap)``::

    received = sum over sales s of (captured_s - fee(captured_s, r_channel(s)))
               - sum of refunds - refunds and reversals of earlier sales netted in

Each *explanation* is another right-hand side: the same sum with one thing changed. Every
explanation predicts the credit exactly, in integers, with per-sale rounding and caps; it *fits*
when the prediction is within the tolerance of what was received. Among those that fit the one
with the lowest score wins, ``score = cost + |received - predicted| / (tolerance + 1)``, ties
broken by cause name and then by the detail (so the answer is deterministic). ``cost`` is the
prior: how much the explanation asks us to believe (:data:`COST`, one place). Nothing fits:
``unknown``.

Explanations tried:

- **fee rates** (``fee_rate_mismatch``), rates in whole bps:
  ``common_offset`` every channel charged its agreed rate + d (a wrong fee table: the commonest
  cause in the field); ``one_rate`` one rate for every sale, from the candidate rates (the
  policy's and common market rates); ``one_channel`` one channel charged a candidate rate, the
  others as agreed; ``cap_ignored`` the agreed rates without the per-sale caps; ``stated_fee`` the credit's ``fee_minor`` is not the agreed fee and
  explains the credit; ``per_channel`` a rate per channel fitted by least squares over several
  credits (see :func:`fit_channel_rates`).
- **returns**: ``refund_netted`` / ``reversal_netted`` (a refund or reversal of a sale paid
  earlier is netted into this credit; or the item's own refunds netted twice),
  ``refund_not_netted``, ``reversal_not_netted`` (a partial reversal the credit ignores),
  alone or together with a common fee offset.
- **sales**: ``missing_sale`` (one sale of a batch left out), ``declined_sale`` (a declined sale
  of a batch paid).
- **rounding** (``rounding_rule``): the agreed rates with fees rounded down, up, half to even, or
  once per channel on the channel's total instead of per sale.

What one credit can tell. One equation cannot separate the rates of several channels: for a
single-channel item the charged rate is identified (to the resolution the tolerance allows:
``fit_range_bps``); for a mixed batch only a one-parameter family is, and the common offset is
the one reported, with ``per_channel: false`` in the detail. The credit's ``fee_minor`` pins the
total fee exactly (it does not add an equation on the rates: received + fee is the gross), and
several credits under the same fee table do give one equation each: :func:`fit_channel_rates`
solves them per channel when their channel mixes differ enough (full rank) and one credit more
confirms the rates (the reconciler passes the merchant's other short credits from the same
acquirer that it still retains, the latest eight).

Chance. A parameter fitted to one number always fits something; it is evidence only as far as
a random difference would *not* have fitted. ``chance_fit`` in the detail is that probability
(the tolerance window over how far the credit moves per step of the rate). A positive offset on
the 5 bps grid is carried by the prior (a fee table above the agreed one is the commonest cause
in the field) however loose the fit; a free offset, an offset below the agreed rates (which is
how a random surplus would look), one channel at another rate (one of K guesses) and a fee
offset paired with a return change (one of K pairs) must each be unlikely by chance.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

BPS = 10_000

# What each explanation asks us to believe (the prior), in score units. A fitting explanation
# scores cost + |residual| / (tolerance + 1): the residual adds less than 1.
COST = {
    "stated_fee": 0.5,  # the acquirer's own statement of its fee
    "common_offset": 1.0,  # a wrong fee table: every channel + d bps, d a multiple of 5
    "one_rate": 1.0,  # one candidate rate for every sale
    "cap_ignored": 1.0,  # the agreed rates, the per-sale caps not applied
    "netted": 1.0,  # one refund or reversal of an earlier sale netted in
    "refund_not_netted": 1.0,
    "refund_netted_twice": 1.0,
    "reversal_not_netted": 1.0,
    "per_channel": 0.75,  # rates per channel that reproduce several credits at once
    "one_channel": 1.5,  # one channel at another candidate rate (one of K guesses)
    "missing_sale": 1.5,  # one of n sales: more freedom than a single aggregate change
    "declined_sale": 1.5,
    "free_offset": 2.0,  # a common offset not a multiple of 5, sharply determined
    "rounding": 1.25,  # fits only differences of at most a minor unit per sale
    "stated_fee_only": 3.0,  # the stated fee differs, but does not explain the credit
}
OFFSET_LIMIT_BPS = 100  # a wrong fee table is within 1% of the agreed one
ROUND_OFFSET_BPS = 5  # offsets on this grid need no sharp fit
ROUNDINGS = ("floor", "ceil", "half_even", "per_channel_total")
# A rate the prior does not carry (a free offset, a fee below the agreed one) is named only if
# a random difference would fit it with at most this chance.
MAX_CHANCE = 0.05
# Every fit's score also pays for its chance of fitting at random (0 to 1) at this weight, so
# that between explanations as plausible the sharper one wins.
CHANCE_WEIGHT = 0.5
_ALTERNATIVES = 3  # runners-up named in the detail
_NO_CAP = 1 << 62


class Sale(NamedTuple):
    """One sale the credit pays, as the item holds it."""

    auth_id: str
    channel: str
    amount_minor: int
    approved: bool = True
    reversed_minor: int = 0
    refunded_minor: int = 0


class Terms(NamedTuple):
    """The agreed fee of a channel: basis points of the sale, optionally capped per sale."""

    bps: int
    cap_minor: int | None = None


class Deduction(NamedTuple):
    """A refund or reversal of a sale paid before, which the acquirer may net into a credit."""

    type: str  # "refund" | "reversal"
    auth_id: str
    amount_minor: int
    event_id: str


class CreditFacts(NamedTuple):
    """The credit being judged. ``expected_minor`` is the reconciler's expected net; every
    prediction is expected + (its change against the agreed terms), so the two agree."""

    received_minor: int
    expected_minor: int
    tolerance_minor: int
    fee_minor: int | None = None


class Equation(NamedTuple):
    """Another credit under the same fee table, for :func:`fit_channel_rates`: its sales, the
    fee it took (:func:`fee_taken`) and its tolerance (default: one minor unit per sale)."""

    sales: Sequence[Sale]
    fee_minor: int
    tolerance_minor: int | None = None


class Explanation(NamedTuple):
    cause: str
    detail: dict[str, Any]


class _Fit(NamedTuple):
    score: float
    cause: str
    key: str  # the detail as canonical JSON: the last tie-breaker
    detail: dict[str, Any]


# ---- the sales as arrays ------------------------------------------------------------------


class _Sales:
    """The sales as numpy integer arrays, and the net they give under a fee model."""

    def __init__(self, sales: Sequence[Sale], terms: Mapping[str, Terms]) -> None:
        self.sales = list(sales)
        self.channels = sorted({s.channel for s in self.sales})
        big = max((s.amount_minor for s in self.sales), default=0) >= (1 << 62) // (4 * BPS)
        dtype = object if big else np.int64  # Python integers beyond int64's range

        def col(values: list[int]) -> np.ndarray:
            return np.array(values, dtype=dtype)

        self.amount = col([s.amount_minor if s.approved else 0 for s in self.sales])
        self.captured = col([max(s.amount_minor - s.reversed_minor, 0) if s.approved else 0
                             for s in self.sales])
        self.refunded = col([s.refunded_minor for s in self.sales])
        self.agreed = col([terms[s.channel].bps for s in self.sales])
        self.cap = col([_NO_CAP if terms[s.channel].cap_minor is None
                        else terms[s.channel].cap_minor for s in self.sales])
        self.channel = np.array([self.channels.index(s.channel) for s in self.sales], dtype=int)
        self.agreed_by_channel = {c: terms[c].bps for c in self.channels}
        self.terms = terms
        self.base = self.net(self.agreed)
        agreed_fees = self.fees(self.agreed)
        self.capped_any = bool((agreed_fees >= self.cap).any())
        # captured minor units whose fee moves with the rate (caps not reached)
        self.moving_minor = int(self.captured[agreed_fees < self.cap].sum())
        self._curve: tuple[np.ndarray, np.ndarray] | None = None

    def fees(self, bps: np.ndarray, amounts: np.ndarray | None = None,
             rounding: str = "half_up", capped: bool = True) -> np.ndarray:
        a = self.captured if amounts is None else amounts
        bps = np.maximum(bps, 0)
        raw = a * bps
        if rounding == "half_up":
            fee = (raw + BPS // 2) // BPS
        elif rounding == "floor":
            fee = raw // BPS
        elif rounding == "ceil":
            fee = -(-raw // BPS)
        elif rounding == "half_even":
            q, r = raw // BPS, raw % BPS
            fee = q + ((r > BPS // 2) | ((r == BPS // 2) & (q % 2 == 1)))
        else:
            raise ValueError(rounding)
        return np.minimum(fee, self.cap) if capped else fee

    def net(self, bps: np.ndarray, amounts: np.ndarray | None = None,
            rounding: str = "half_up", capped: bool = True) -> int:
        a = self.captured if amounts is None else amounts
        return int(a.sum() - self.fees(bps, a, rounding, capped).sum() - self.refunded.sum())

    def net_per_channel_total(self) -> int:
        """Fees rounded once per channel on the total of its uncapped sales (caps still bind)."""
        fee = 0
        full = self.fees(self.agreed)
        for i, _ in enumerate(self.channels):
            on = self.channel == i
            capped = on & (full >= self.cap)
            fee += int(full[capped].sum())
            rest = on & ~capped
            if rest.any():
                fee += (int((self.captured[rest] * self.agreed[rest]).sum()) + BPS // 2) // BPS
        return int(self.captured.sum()) - fee - int(self.refunded.sum())

    def offset_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Offsets d from -OFFSET_LIMIT (no rate below 0) to +OFFSET_LIMIT bps, and
        net(agreed + d) - net(agreed) for each: computed once, shared by every combination."""
        if self._curve is None:
            lo = max(-OFFSET_LIMIT_BPS, -min(self.agreed_by_channel.values()))
            grid = np.arange(lo, OFFSET_LIMIT_BPS + 1)
            self._curve = (grid, _net_grid(self, grid) - self.base)
        return self._curve

    def rates(self, bps: np.ndarray) -> dict[str, int]:
        """The rate per channel (all sales of a channel share it in every model here)."""
        out = {}
        for i, c in enumerate(self.channels):
            on = self.channel == i
            out[c] = int(np.maximum(bps[on], 0)[0]) if on.any() else self.agreed_by_channel[c]
        return out


# ---- explaining one credit ------------------------------------------------------------------


def explain(sales: Sequence[Sale], terms: Mapping[str, Terms], credit: CreditFacts, *,
            deductions: Sequence[Deduction] = (), candidate_bps: Sequence[int] = (),
            others: Sequence[Equation] = ()) -> Explanation:
    """The best explanation of a credit that differs from its expected net, or ``unknown``.

    ``terms`` must hold every channel of ``sales``. ``candidate_bps`` are rates an acquirer
    might charge by mistake (the policy's rates and common market rates). ``others`` are other
    credits believed to be under the same fee table, for a per-channel fit. The detail of a
    ``netted`` explanation names the deduction (``detail["netted"]["event_id"]``): one netted
    refund explains one credit, so the caller may consume it.
    """
    s = _Sales(sales, terms)
    received, expected, tol = credit.received_minor, credit.expected_minor, credit.tolerance_minor
    fits: list[_Fit] = []

    def guesses(k: int) -> float:
        """The chance that one of k exact guesses catches a random difference of this size
        (anywhere from 0 to twice it) within the tolerance."""
        return round(min(1.0, k * (2 * tol + 1) / (2 * abs(received - expected) + 1)), 4)

    def consider(cost: float, cause: str, predicted: int,
                 detail: dict[str, Any] | Callable[[], dict[str, Any]], chance: float) -> None:
        residual = received - predicted
        if abs(residual) > tol:
            return
        detail = dict(detail() if callable(detail) else detail)  # built only for a fit
        detail = {"model": detail.pop("model"), **detail, "chance_fit": chance,
                  "predicted_minor": predicted, "residual_minor": residual}
        score = round(cost + CHANCE_WEIGHT * chance + abs(residual) / (tol + 1), 6)
        fits.append(_Fit(score, cause, json.dumps(detail, sort_keys=True), detail))

    fee_said = _stated(s, credit)
    # a credit that states the agreed fee rules out every fee explanation
    fee_allowed = fee_said is None or not fee_said["as_agreed"]

    # Changes that are not about fees, each a shift of the prediction (aggregate ones combine
    # with a fee offset below).
    shifts = _return_shifts(s, deductions)
    for cost, cause, shift, detail, k in shifts:
        consider(cost, cause, expected + shift, detail, guesses(k))
    for cost, cause, shift, detail, k in _sale_shifts(s, received - expected, tol):
        consider(cost, cause, expected + shift, detail, guesses(k))

    if fee_allowed and s.sales:
        agreed = s.agreed
        # A wrong fee table: every channel + d bps, alone or with one return change. With
        # K return changes to pair it with, a loosely pinned offset would pair with one of them
        # by chance: the pairs are tried only if K x its chance of a fit is at most one half.
        loose = _chance(tol, s.moving_minor, ROUND_OFFSET_BPS)
        pairs = shifts if len(shifts) * loose <= 0.5 else []
        for cost0, cause0, shift, detail0, _ in [(0.0, "", 0, {}, 1)] + pairs:
            for cost, d, extra, chance in _offset_fits(s, received - expected - shift, tol):
                def offset_detail(d=d, extra=extra, cause0=cause0, detail0=detail0):
                    detail = {"model": "common_offset", **extra,
                              "fee_bps_charged": s.rates(agreed + d),
                              "agreed_bps": dict(s.agreed_by_channel),
                              "per_channel": len(s.channels) == 1}
                    if cause0:
                        detail["with"] = {"cause": cause0, **detail0}
                    return detail
                consider(cost + cost0, "fee_rate_mismatch",
                         expected + shift + s.net(agreed + d) - s.base, offset_detail,
                         min(1.0, chance * len(pairs)) if cause0 else chance)
        rates = [r for r in sorted(set(candidate_bps))
                 if any(v != r for v in s.agreed_by_channel.values())]
        if rates:
            nets = _nets(s, np.broadcast_to(np.array(rates, dtype=agreed.dtype),
                                            (len(s.sales), len(rates))))
            for r, n in zip(rates, nets):
                consider(COST["one_rate"], "fee_rate_mismatch", expected + int(n) - s.base,
                         lambda r=r: {"model": "one_rate",
                                      "fee_bps_charged": s.rates(np.full_like(agreed, r)),
                                      "agreed_bps": dict(s.agreed_by_channel),
                                      "per_channel": len(s.channels) == 1},
                         guesses(len(rates)))
        if len(s.channels) > 1:
            # K (channel, rate) guesses: named only if K guesses would catch a random
            # difference of this size at most half the time (a higher rate), or at most
            # MAX_CHANCE (a lower rate: how a random surplus would look)
            tried = {c: sorted(set(candidate_bps) - {s.agreed_by_channel[c]})
                     for c in s.channels}
            chance = guesses(sum(len(g) for g in tried.values()))
            for i, c in enumerate(s.channels):
                allowed = [r for r in tried[c]
                           if chance <= (0.5 if r > s.agreed_by_channel[c] else MAX_CHANCE)]
                if not allowed:
                    continue
                on = (s.channel == i)[:, None]
                nets = _nets(s, np.where(on, np.array(allowed, dtype=agreed.dtype)[None, :],
                                         agreed[:, None]))
                for r, n in zip(allowed, nets):
                    consider(COST["one_channel"], "fee_rate_mismatch",
                             expected + int(n) - s.base,
                             lambda r=r, i=i, c=c: {
                                 "model": "one_channel", "channel": c,
                                 "fee_bps_charged": s.rates(np.where(s.channel == i, r, agreed)),
                                 "agreed_bps": dict(s.agreed_by_channel), "per_channel": True},
                             chance)
        uncapped = s.net(agreed, capped=False) if s.capped_any else s.base
        if uncapped != s.base:
            # the agreed rates with the per-sale caps ignored
            consider(COST["cap_ignored"], "fee_rate_mismatch", expected + uncapped - s.base,
                     {"model": "cap_ignored", "fee_bps_charged": dict(s.agreed_by_channel),
                      "agreed_bps": dict(s.agreed_by_channel),
                      "caps_minor": {c: t.cap_minor for c, t in sorted(terms.items())
                                     if c in s.agreed_by_channel and t.cap_minor is not None}},
                     guesses(1))
        # another rounding moves each sale's fee by at most one minor unit
        for rounding in ROUNDINGS if abs(received - expected) <= len(s.sales) + tol else ():
            net = (s.net_per_channel_total() if rounding == "per_channel_total"
                   else s.net(agreed, rounding=rounding))
            if net != s.base:
                consider(COST["rounding"], "rounding_rule", expected + net - s.base,
                         {"model": "rounding", "rounding": rounding,
                          "agreed_bps": dict(s.agreed_by_channel)}, guesses(len(ROUNDINGS)))
        if others:
            fitted = fit_channel_rates(
                [Equation(sales, _fee_taken(s, credit), tol)] + list(others), terms)
            if fitted is not None and fitted["chance_fit"] <= MAX_CHANCE:
                chance = fitted.pop("chance_fit")
                bps = np.array([fitted["fee_bps_charged"][sale.channel] for sale in s.sales],
                               dtype=agreed.dtype)
                consider(COST["per_channel"], "fee_rate_mismatch",
                         expected + s.net(bps) - s.base,
                         {"model": "per_channel", **fitted,
                          "agreed_bps": dict(s.agreed_by_channel), "per_channel": True},
                         chance)

    if fee_said is not None and fee_allowed:
        taken = fee_said["fee_minor_stated"] - fee_said["fee_minor_agreed"]
        for cost0, cause0, shift, detail0, _ in [(0.0, "", 0, {}, 1)] + shifts:
            detail = {"model": "stated_fee", **fee_said}
            if cause0:
                detail["with"] = {"cause": cause0, **detail0}
            consider(COST["stated_fee"] + cost0, "fee_rate_mismatch", expected + shift - taken,
                     detail, guesses(len(shifts)) if cause0 else guesses(1))

    if not fits:
        if fee_said is not None and fee_allowed:
            # The acquirer says it took another fee; the credit has more wrong with it besides.
            return Explanation("fee_rate_mismatch", {
                "model": "stated_fee_only", **fee_said, "explains_credit": False,
                "difference_minor": received - expected, "score": COST["stated_fee_only"]})
        return Explanation("unknown", {"model": "none", "difference_minor": received - expected})
    fits.sort(key=lambda f: (f.score, f.cause, f.key))
    best = fits[0]
    seen = {(best.cause, best.detail["model"])}
    runners = []
    for f in fits[1:]:
        if (f.cause, f.detail["model"]) not in seen and len(runners) < _ALTERNATIVES:
            seen.add((f.cause, f.detail["model"]))
            runners.append({"cause": f.cause, "model": f.detail["model"], "score": f.score})
    return Explanation(best.cause, {**best.detail, "score": best.score,
                                    "alternatives": runners})


def _stated(s: _Sales, credit: CreditFacts) -> dict[str, Any] | None:
    """What the credit's fee_minor says: the fee stated, the fee agreed, and the rate it implies
    (per channel when there is one channel; a common offset otherwise)."""
    if credit.fee_minor is None:
        return None
    agreed_fee = int(s.fees(s.agreed).sum())
    out: dict[str, Any] = {"fee_minor_stated": credit.fee_minor, "fee_minor_agreed": agreed_fee}
    out["as_agreed"] = abs(credit.fee_minor - agreed_fee) <= credit.tolerance_minor
    if out["as_agreed"]:
        return out
    uncapped = s.fees(s.agreed) < s.cap
    base = int(s.captured[uncapped].sum()) if s.sales else 0
    if base:
        # the continuous least-squares offset (one unknown, one equation) over uncapped sales
        offset = (credit.fee_minor - agreed_fee) * BPS / base
        out["offset_bps"] = round(offset, 2)
        out["fee_bps_charged"] = {c: round(b + offset, 2) for c, b in s.agreed_by_channel.items()}
        out["per_channel"] = len(s.channels) == 1
    return out


def _fee_taken(s: _Sales, credit: CreditFacts) -> int:
    return fee_taken(s.sales, credit.received_minor, credit.fee_minor)


def fee_taken(sales: Sequence[Sale], received_minor: int, fee_minor: int | None = None) -> int:
    """The fee a credit took: its stated fee_minor, else captured - refunded - received."""
    if fee_minor is not None:
        return fee_minor
    gross = sum(max(s.amount_minor - s.reversed_minor, 0) for s in sales if s.approved)
    return gross - sum(s.refunded_minor for s in sales) - received_minor


def _return_shifts(s: _Sales, deductions: Sequence[Deduction]
                   ) -> list[tuple[float, str, int, dict[str, Any], int]]:
    """Refund and reversal explanations: (cost, cause, change of the credit, detail, how many
    guesses of its kind were tried)."""
    out: list[tuple[float, str, int, dict[str, Any], int]] = []
    netted = len({d.event_id for d in deductions})
    seen = set()
    for d in deductions:
        if d.event_id in seen:
            continue
        seen.add(d.event_id)
        cause = "refund_netted" if d.type == "refund" else "reversal_netted"
        out.append((COST["netted"], cause, -d.amount_minor,
                    {"model": "netted", "netted": {"type": d.type, "auth_id": d.auth_id,
                                                   "amount_minor": d.amount_minor,
                                                   "event_id": d.event_id}}, netted))
    refunded = int(s.refunded.sum()) if s.sales else 0
    if refunded:
        out.append((COST["refund_not_netted"], "refund_not_netted", refunded,
                    {"model": "refund_not_netted", "refunded_minor": refunded}, 1))
        out.append((COST["refund_netted_twice"], "refund_netted", -refunded,
                    {"model": "refund_netted_twice", "refunded_minor": refunded}, 1))
    if s.sales and bool((s.amount != s.captured).any()):
        unreversed = s.net(s.agreed, amounts=s.amount) - s.base
        out.append((COST["reversal_not_netted"], "reversal_not_netted", unreversed,
                    {"model": "reversal_not_netted",
                     "reversed_minor": int((s.amount - s.captured).sum())}, 1))
    return out


def _sale_shifts(s: _Sales, diff: int, tol: int
                 ) -> list[tuple[float, str, int, dict[str, Any], int]]:
    """One sale of a batch left out, or one declined sale paid: the sale closest to the
    difference, if any is within the tolerance (it explains the credit only if it is unique
    enough: two sales that both fit are reported as how many fit)."""
    out: list[tuple[float, str, int, dict[str, Any], int]] = []
    if len(s.sales) < 2:
        return out
    nets = s.captured - s.fees(s.agreed)
    declined = np.array([not sale.approved for sale in s.sales])
    full = np.array([sale.amount_minor for sale in s.sales], dtype=s.captured.dtype)
    declined_nets = full - np.minimum((full * s.agreed + BPS // 2) // BPS, s.cap)
    for cause, sign, values, eligible in (
            ("missing_sale", -1, nets, (s.captured > 0)),
            ("declined_sale", 1, declined_nets, declined)):
        idx = np.flatnonzero(eligible)
        if not idx.size:
            continue
        gaps = np.abs(sign * values[idx] - diff)
        ok = idx[gaps <= tol]
        if not ok.size:
            continue
        # the closest, then the first: deterministic
        pick = int(ok[np.argmin(np.abs(sign * values[ok] - diff))])
        sale = s.sales[pick]
        out.append((COST[cause], cause, int(sign * values[pick]),
                    {"model": cause, "auth_id": sale.auth_id, "channel": sale.channel,
                     "amount_minor": sale.amount_minor, "sales_that_fit": int(ok.size)},
                    int(idx.size)))
    return out


def _offset_fits(s: _Sales, target_shift: int, tol: int
                 ) -> list[tuple[float, int, dict[str, Any], float]]:
    """Common offsets d (bps) with net(agreed + d) - net(agreed) within tol of target_shift.

    The net is monotone in d, so the fitting offsets are one interval; it is found on the grid
    -OFFSET_LIMIT..OFFSET_LIMIT evaluated at once. Returns (cost, d, detail, chance of a fit)
    for the chosen d, or nothing:

    - a positive multiple of 5 (nearest the continuous estimate): a fee table above the
      agreed one, the commonest cause in the field, so the prior carries it however loosely
      the credit pins it (``chance_fit`` says how loosely);
    - any other whole offset of at least 5 bps, or a negative one (a fee below the agreed one,
      which is how a random surplus would look), only when the credit pins the rate so sharply
      that a random difference would fit with a chance of at most MAX_CHANCE.
    """
    grid, shifts = s.offset_curve()
    ok = grid[np.abs(shifts - target_shift) <= tol]
    ok = ok[ok != 0]
    if not ok.size:
        return []
    # the continuous estimate: interpolate the shift curve (decreasing in d) at the target
    estimate = float(np.interp(-target_shift, -shifts.astype(float), grid))
    first, last = int(ok.min()), int(ok.max())
    sensitivity = s.moving_minor
    extra = {"fit_bps": round(estimate, 2), "fit_range_bps": [first, last]}
    round_ok = ok[(ok % ROUND_OFFSET_BPS == 0) & (ok > 0)]
    if round_ok.size:
        d = int(round_ok[np.argmin(np.abs(round_ok - estimate))])  # ties: the lower one
        return [(COST["common_offset"], d, {"offset_bps": d, **extra},
                 _chance(tol, sensitivity, ROUND_OFFSET_BPS))]
    d = int(ok[np.argmin(np.abs(ok - estimate))])
    chance = _chance(tol, sensitivity, 1)
    if abs(d) >= ROUND_OFFSET_BPS and chance <= MAX_CHANCE:
        return [(COST["free_offset"], d, {"offset_bps": d, **extra}, chance)]
    return []


def _chance(tol: int, sensitivity_minor: int, step_bps: int) -> float:
    """How likely a random difference lands within the tolerance of some rate on a grid of
    step_bps: the tolerance window over the credit's move per grid step (at most 1)."""
    per_step = sensitivity_minor * step_bps / BPS
    return 1.0 if per_step <= 0 else round(min(1.0, (2 * tol + 1) / per_step), 4)


def _net_grid(s: _Sales, grid: np.ndarray) -> np.ndarray:
    """net(agreed + d) for every d of the grid."""
    return _nets(s, s.agreed[:, None] + grid[None, :].astype(s.agreed.dtype))


def _nets(s: _Sales, bps: np.ndarray) -> np.ndarray:
    """The net for each column of rates (one row per sale), fees rounded half up and capped."""
    bps = np.maximum(bps, 0)
    a = s.captured[:, None]
    fees = np.minimum((a * bps + BPS // 2) // BPS, s.cap[:, None])
    return a.sum() - fees.sum(axis=0) - s.refunded.sum()


# ---- several credits: rates per channel -----------------------------------------------------


def fit_channel_rates(equations: Sequence[Equation], terms: Mapping[str, Terms]
                      ) -> dict[str, Any] | None:
    """Fee rates per channel from several credits, by least squares; None if not identifiable.

    Each credit gives one equation, sum over its sales of fee(captured, r_channel) = fee taken,
    linear in the rates for uncapped sales (capped sales take their cap). The rates are
    identifiable when the channel mixes differ (full column rank); they are the least-squares
    solution rounded to whole bps, and are accepted only if

    - there is at least one credit more than channels (so that some credit confirms them),
    - each is within OFFSET_LIMIT_BPS of the agreed rate, and
    - every credit is then reproduced within its tolerance (default one minor unit per sale).

    ``chance_fit`` is the chance that the confirming credits fit at random: for each, its
    tolerance window over how far the rates' plausible range moves it, multiplied over the
    (credits - channels) least telling credits.
    """
    channels = sorted({sale.channel for eq in equations for sale in eq.sales})
    if not channels or len(equations) <= len(channels):
        return None
    rows, ys, chances = [], [], []
    for eq in equations:
        row = [0.0] * len(channels)
        y = float(eq.fee_minor)
        for sale in eq.sales:
            captured = max(sale.amount_minor - sale.reversed_minor, 0) if sale.approved else 0
            t = terms[sale.channel]
            if t.cap_minor is not None and (captured * t.bps + BPS // 2) // BPS >= t.cap_minor:
                y -= t.cap_minor  # still capped: no information on the rate
            else:
                row[channels.index(sale.channel)] += captured / BPS
        rows.append(row)
        ys.append(y)
        window = 2 * _equation_tolerance(eq) + 1
        chances.append(min(1.0, window / max(sum(row) * 2 * OFFSET_LIMIT_BPS, 1e-9)))
    a, b = np.array(rows), np.array(ys)
    if np.linalg.matrix_rank(a) < len(channels):
        return None
    solution, *_ = np.linalg.lstsq(a, b, rcond=None)
    rates = {c: int(round(float(r))) for c, r in zip(channels, solution)}
    if any(r < 0 or abs(r - terms[c].bps) > OFFSET_LIMIT_BPS for c, r in rates.items()):
        return None
    for eq in equations:
        fee = 0
        for sale in eq.sales:
            captured = max(sale.amount_minor - sale.reversed_minor, 0) if sale.approved else 0
            f = (captured * rates[sale.channel] + BPS // 2) // BPS
            cap = terms[sale.channel].cap_minor
            fee += f if cap is None else min(f, cap)
        if abs(fee - eq.fee_minor) > _equation_tolerance(eq):
            return None
    chance = float(np.prod(sorted(chances, reverse=True)[:len(equations) - len(channels)]))
    return {"fee_bps_charged": rates,
            "fit_bps": {c: round(float(r), 2) for c, r in zip(channels, solution)},
            "credits": len(equations), "chance_fit": round(chance, 4)}


def _equation_tolerance(eq: Equation) -> int:
    return len(eq.sales) if eq.tolerance_minor is None else eq.tolerance_minor
