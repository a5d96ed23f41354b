"""Settlement policy: fees, tolerance, settlement cycles and the business-day calendar.

This module owns the answers to "what should this sale be credited, and by when?". It is
pure: stdlib only, no clock, and no I/O except `load_policy` / `default_policy` reading the
TOML file once. The reconciler asks it, once per event:

- `cycle_for(acquirer, merchant_id)`: the first `[[cycles]]` entry whose globs match;
- `trade_day(event_time_ms, cycle)`: the sale's trade date (a `date.toordinal()`);
- `deadline_ms(event_time_ms, cycle)` / `batch_deadline_ms(trade_day, cycle)`: when the
  credit is due (before grace);
- `fee_minor(channel, amount_minor)`: the fee the acquirer may keep.

How T+N counts (DESIGN section 3): the trade date of a sale is its local calendar date in the
cycle's time zone, or the next calendar date when the sale is at or after the cut-off; it need
not be a business day. `T+N HH:MM` is HH:MM local on the N-th business day *after* the trade
date; `T+0` is the trade date itself when it is a business day, else the next business day.
Business days are Monday to Friday, minus `holidays`, plus `workdays` (make-up days).

Speed: these calls run once per sale on multi-million-event streams, and a zoneinfo
conversion per call costs microseconds. UTC offsets only change on 15-minute boundaries of UTC
time, so the offset is cached per 15-minute bucket (a bucket that does contain a change, such
as a historical local-mean-time switch at an odd second, is never cached and goes the exact
way); business-day deadlines are memoised per (cycle, trade date).

The config reference for users is docs/policy.md.
"""
from __future__ import annotations

import difflib
import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from os import PathLike
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

BATCH = "batch"
PER_SALE = "per_sale"
MODES = (BATCH, PER_SALE)

BUSINESS = "business"  # due = "T+N HH:MM"
DURATION = "duration"  # due = "+<duration>"

MS_PER_MINUTE = 60_000
MS_PER_DAY = 86_400_000
BPS_DENOMINATOR = 10_000

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_ONE_MS = timedelta(milliseconds=1)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# UTC offsets of every zone in the tz database change on 15-minute boundaries of UTC time.
_BUCKET_MS = 15 * MS_PER_MINUTE
# Bounds memory on very long replays: 2**20 buckets is about 30 years of one zone.
_MAX_CACHED_BUCKETS = 1 << 20
_MAX_CACHED_PAIRS = 1 << 20

_DEFAULT_TIME = {
    "lateness": "10m",
    "orphan_after": "1d",
    "max_future": "15m",
    "keep_settled": "7d",
    "missing_horizon": "90d",
    "redelivery_window": "35d",
}
_TOP_KEYS = ("timezone", "holidays", "workdays", "tolerance", "fees", "cycles", "time", "aging",
             "early_warning", "settlement_files")
# [early_warning]: durations as text, the rest plain integers (streams/core/earlywarning.py)
_DEFAULT_EARLY_WARNING: dict[str, Any] = {
    "enabled": True,
    "window": "28d",
    "step": "15m",
    "lookback": "2d",
    "min_history": 5,
    "min_due_sales": 20,
    "min_expected_pct": 50,
    "band_pct": 10,
    "min_lag": "90m",
    "min_shortfall_pct": 10,
}
_FILE_KEYS = ("acquirer", "expected")
_CYCLE_KEYS = ("acquirer", "merchant_id", "mode", "due", "cutoff", "grace", "timezone")
_FEE_KEYS = ("bps", "cap_minor")
_TOLERANCE_KEYS = ("absolute_minor", "relative_bps")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

_UNIT_MS = {"d": MS_PER_DAY, "h": 3_600_000, "m": MS_PER_MINUTE, "s": 1_000, "ms": 1}
_DURATION_RE = re.compile(r"(?:\d+(?:ms|s|m|h|d))+")
_DURATION_PART_RE = re.compile(r"(\d+)(ms|s|m|h|d)")
_DUE_BUSINESS_RE = re.compile(r"T\+(\d{1,3})\s+(\d{1,2}):(\d{2})")
_CLOCK_RE = re.compile(r"(\d{1,2}):(\d{2})")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MAX_CONFIG_BYTES = 1 << 20  # a policy file is a few kB; refuse to parse megabytes of it
_MAX_ZONE_NAME = 64  # the longest IANA name is about 30 characters


class PolicyError(ValueError):
    """A bad policy value. The message starts with the key, e.g. ``cycles[1].due: ...``.

    `key` is that path ("" for the document as a whole); `load_policy` also puts the file
    name in front of the message.
    """

    def __init__(self, key: str, message: str, source: str | None = None) -> None:
        text = f"{key}: {message}" if key else message
        super().__init__(f"{source}: {text}" if source else text)
        self.key = key
        self.message = message
        self.source = source


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Allowed difference = absolute_minor x sales in the credit + expected x relative_bps / 10,000."""

    absolute_minor: int = 0
    relative_bps: int = 0

    def allowed_minor(self, expected_minor: int, sales: int) -> int:
        # The relative part is rounded down: the tolerance never grows by rounding.
        return self.absolute_minor * sales + abs(expected_minor) * self.relative_bps // BPS_DENOMINATOR


@dataclass(frozen=True, slots=True)
class FeeRule:
    bps: int
    cap_minor: int | None = None

    def fee_minor(self, amount_minor: int) -> int:
        # Integer round half up: no float ever touches money.
        fee = (amount_minor * self.bps + BPS_DENOMINATOR // 2) // BPS_DENOMINATOR
        cap = self.cap_minor
        return fee if cap is None or fee <= cap else cap


_NO_FEE = FeeRule(0)


@dataclass(frozen=True, slots=True)
class EarlyWarningConfig:
    """`[early_warning]`: how each acquirer's settlement baseline is learned and when today's
    credits running behind it raise an early warning (streams/core/earlywarning.py)."""

    enabled: bool = True
    window_ms: int = 28 * MS_PER_DAY  # settle days older than this leave the baseline
    step_ms: int = 15 * MS_PER_MINUTE  # the paid share is sampled every step
    lookback_ms: int = 2 * MS_PER_DAY  # ...from this long before each deadline
    min_history: int = 5  # settle days learned (restored ones count) before an acquirer may warn
    min_due_sales: int = 20  # fewer sales due by a deadline never warn
    min_expected_pct: int = 50  # the usual share paid by now must be at least this
    band_pct: int = 10  # the lower band: this percentile of the learned days
    min_lag_ms: int = 5_400_000  # warn when this far behind the lower band
    min_shortfall_pct: int = 10  # ...and at least this many points of share below the usual


@dataclass(frozen=True, slots=True)
class Cycle:
    """One `[[cycles]]` entry, resolved. `index` is its 0-based position in the file."""

    index: int
    acquirer: str
    merchant_id: str
    mode: str  # BATCH | PER_SALE
    due_kind: str  # BUSINESS | DURATION
    due_days: int  # N of T+N (BUSINESS)
    due_minute: int  # HH:MM of T+N as minutes after local midnight (BUSINESS)
    due_after_ms: int  # the duration (DURATION)
    cutoff_minute: int | None  # None: the trade date is the plain local date
    grace_ms: int
    timezone: str


@dataclass(frozen=True, slots=True)
class AgingTier:
    """One `[[aging.tiers]]` entry: a finding is in this tier when its amount at stake reaches
    `min_amount` (in the currency's major unit, or `min_amount_minor[currency]`) or its age
    reaches `min_age_days` business days; the first tier reached wins. The last tier has
    neither (it takes the rest). `due` is how long the ops team has to act once a finding
    enters the tier: a duration (`due_ms`) or `due_business_days` business days."""

    name: str
    min_amount: tuple[int, int] | None  # (digits, digits after the point): "100000.00" -> (10000000, 2)
    min_amount_minor: dict[str, int]  # per currency, overrides min_amount
    min_age_days: int | None
    due_ms: int
    due_business_days: int
    due_text: str

    def threshold_minor(self, currency: str, digits: int) -> int | None:
        """`min_amount` in minor units of a currency with `digits` minor-unit digits (rounded
        up: a threshold of 0.5 yen is reached at 1 yen), or None when amount never decides."""
        if currency in self.min_amount_minor:
            return self.min_amount_minor[currency]
        if self.min_amount is None:
            return None
        value, scale = self.min_amount
        if digits >= scale:
            return value * 10 ** (digits - scale)
        return -(-value // 10 ** (scale - digits))


@dataclass(frozen=True, slots=True)
class AgingRules:
    """`[aging]`: the tiers, most severe first, and how long a finding without a resolution
    event (every aged kind but missing) stays in the aging view."""

    tiers: tuple[AgingTier, ...]
    horizon_ms: int


@dataclass(frozen=True, slots=True)
class FileRule:
    """One `[[settlement_files]]` entry: by when an acquirer's settlement file for a settle date
    D is expected (contract v1.1 completeness markers). `expected = "T+N HH:MM"` is HH:MM local
    (policy time zone) on the N-th business day after D; "T+0 HH:MM" is D itself."""

    index: int
    acquirer: str  # a glob; the first entry that matches an acquirer wins
    due_days: int
    due_minute: int


class _Zone:
    """A time zone with its cache of UTC offsets per 15-minute bucket of UTC time."""

    __slots__ = ("name", "info", "offsets", "mixed")

    def __init__(self, name: str) -> None:
        self.name = name
        self.info = ZoneInfo(name)
        self.offsets: dict[int, int] = {}  # bucket -> offset ms
        self.mixed: set[int] = set()  # buckets with an offset change inside (never cached)

    def exact_offset_ms(self, ms: int) -> int:
        offset = (_EPOCH + timedelta(milliseconds=ms)).astimezone(self.info).utcoffset()
        assert offset is not None  # an aware datetime always has one
        return offset // _ONE_MS

    def offset_ms(self, ms: int) -> int:
        """The slow path of the hot loops: fill the bucket's cache entry, or answer exactly."""
        bucket = ms // _BUCKET_MS
        if bucket not in self.mixed:
            start = bucket * _BUCKET_MS
            first = self.exact_offset_ms(start)
            if first == self.exact_offset_ms(start + _BUCKET_MS - 1):
                _put(self.offsets, bucket, first)
                return first
            self.mixed.add(bucket)
        return self.exact_offset_ms(ms)

    def local_ms(self, ms: int) -> int:
        off = self.offsets.get(ms // _BUCKET_MS)
        return ms + (self.offset_ms(ms) if off is None else off)

    def to_utc_ms(self, ordinal: int, minute: int) -> int:
        """Local wall time -> epoch ms. A time in a DST gap or overlap is read as the later of
        its two readings (fold 0 and 1): a deadline is never earlier than any reading of it."""
        d = date.fromordinal(ordinal)
        naive = datetime(d.year, d.month, d.day, minute // 60, minute % 60)
        return max(
            (naive.replace(tzinfo=self.info, fold=fold) - _EPOCH) // _ONE_MS for fold in (0, 1)
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """The whole settlement policy, immutable. Build it with `load_policy`, `policy_from_dict`
    or `default_policy`; the private caches only memoise pure functions of the fields."""

    timezone: str
    holidays: frozenset[date]
    workdays: frozenset[date]
    tolerance: Tolerance
    fees: dict[str, FeeRule]
    cycles: tuple[Cycle, ...]
    lateness_ms: int
    orphan_after_ms: int
    max_future_ms: int
    keep_settled_ms: int
    # an item whose missing finding is open is kept this long after its close, then dropped
    missing_horizon_ms: int = 90 * 86_400_000
    # ids that recognise a redelivered event are kept this long after the event's own time
    redelivery_window_ms: int = 35 * 86_400_000
    # SLA tiers of open findings by amount at stake and age in business days (streams.core.aging)
    aging: AgingRules = field(default_factory=lambda: DEFAULT_AGING)
    early_warning: EarlyWarningConfig = EarlyWarningConfig()
    # [[settlement_files]]: acquirers that send completeness markers, and by when (v1.1)
    settlement_files: tuple[FileRule, ...] = ()
    # caches (not part of equality or repr)
    _zone: _Zone = field(init=False, repr=False, compare=False)
    _cycle_zones: tuple[_Zone, ...] = field(init=False, repr=False, compare=False)
    _cutoff_ms: tuple[int, ...] = field(init=False, repr=False, compare=False)
    # per cycle: epoch day of the trade date -> deadline ms (business dues)
    _day_deadlines: tuple[dict[int, int], ...] = field(init=False, repr=False, compare=False)
    # per cycle: 15-minute bucket -> trade date ordinal / deadline ms, for buckets in which
    # both are constant (no offset change and no cut-off inside the bucket)
    _bucket_trade_days: tuple[dict[int, int], ...] = field(init=False, repr=False, compare=False)
    _bucket_deadlines: tuple[dict[int, int], ...] = field(init=False, repr=False, compare=False)
    _holiday_ordinals: frozenset[int] = field(init=False, repr=False, compare=False)
    _workday_ordinals: frozenset[int] = field(init=False, repr=False, compare=False)
    _by_acquirer: dict[str, Any] = field(init=False, repr=False, compare=False)
    _by_pair: dict[tuple[str, str], Cycle] = field(init=False, repr=False, compare=False)
    _default_fee: FeeRule = field(init=False, repr=False, compare=False)
    _fee_terms: dict[str, tuple[int, int | None]] = field(init=False, repr=False, compare=False)
    _default_terms: tuple[int, int | None] = field(init=False, repr=False, compare=False)
    _all_bps: frozenset[int] = field(init=False, repr=False, compare=False)
    _file_rules: dict[str, FileRule | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        init = object.__setattr__
        zones: dict[str, _Zone] = {self.timezone: _Zone(self.timezone)}
        for c in self.cycles:
            if c.timezone not in zones:
                zones[c.timezone] = _Zone(c.timezone)
        init(self, "_zone", zones[self.timezone])
        init(self, "_cycle_zones", tuple(zones[c.timezone] for c in self.cycles))
        # Cut-off as ms after local midnight; MS_PER_DAY (never reached) when there is none.
        init(
            self,
            "_cutoff_ms",
            tuple(
                MS_PER_DAY if c.cutoff_minute is None else c.cutoff_minute * MS_PER_MINUTE
                for c in self.cycles
            ),
        )
        init(self, "_day_deadlines", tuple({} for _ in self.cycles))
        init(self, "_bucket_trade_days", tuple({} for _ in self.cycles))
        init(self, "_bucket_deadlines", tuple({} for _ in self.cycles))
        init(self, "_holiday_ordinals", frozenset(d.toordinal() for d in self.holidays))
        init(self, "_workday_ordinals", frozenset(d.toordinal() for d in self.workdays))
        init(self, "_by_acquirer", {})
        init(self, "_by_pair", {})
        default_fee = self.fees.get("default", _NO_FEE)
        init(self, "_default_fee", default_fee)
        init(self, "_fee_terms", {ch: (r.bps, r.cap_minor) for ch, r in self.fees.items()})
        init(self, "_default_terms", (default_fee.bps, default_fee.cap_minor))
        init(self, "_all_bps", frozenset(rule.bps for rule in self.fees.values()))
        init(self, "_file_rules", {})

    # ---- cycles -------------------------------------------------------------------------

    def cycle_for(self, acquirer: str, merchant_id: str) -> Cycle:
        """The first cycle whose acquirer and merchant_id globs both match. Never fails: the
        loader requires the last cycle to match everything."""
        hit = self._by_acquirer.get(acquirer)
        if hit is None:
            hit = self._acquirer_entry(acquirer)
        if isinstance(hit, Cycle):
            return hit
        # Some cycle for this acquirer names merchants: resolve and memoise the pair.
        key = (acquirer, merchant_id)
        cycle = self._by_pair.get(key)
        if cycle is None:
            cycle = next(c for c in hit if fnmatch.fnmatchcase(merchant_id, c.merchant_id))
            if len(self._by_pair) >= _MAX_CACHED_PAIRS:
                self._by_pair.clear()
            self._by_pair[key] = cycle
        return cycle

    def _acquirer_entry(self, acquirer: str) -> Cycle | tuple[Cycle, ...]:
        # The cycles whose acquirer glob matches, in order, up to the first one that matches
        # every merchant. If that is the first of them, the acquirer alone decides.
        candidates: list[Cycle] = []
        for c in self.cycles:
            if fnmatch.fnmatchcase(acquirer, c.acquirer):
                candidates.append(c)
                if _matches_everything(c.merchant_id):
                    break
        entry: Cycle | tuple[Cycle, ...]
        entry = candidates[0] if len(candidates) == 1 else tuple(candidates)
        self._by_acquirer[acquirer] = entry
        return entry

    # ---- settlement files (completeness markers, contract v1.1) -------------------------

    def file_rule(self, acquirer: str) -> FileRule | None:
        """The first `[[settlement_files]]` entry matching the acquirer, or None: its files are
        not expected by any time (markers from it still close items and check totals)."""
        rules = self._file_rules
        if acquirer in rules:
            return rules[acquirer]
        rule = next((r for r in self.settlement_files
                     if fnmatch.fnmatchcase(acquirer, r.acquirer)), None)
        if len(rules) >= _MAX_CACHED_PAIRS:
            rules.clear()
        rules[acquirer] = rule
        return rule

    def file_expected_ms(self, acquirer: str, settle_day: int) -> int | None:
        """When the acquirer's settlement file for `settle_day` (an ordinal) is expected by, or
        None when the acquirer has no `[[settlement_files]]` entry."""
        rule = self.file_rule(acquirer)
        if rule is None:
            return None
        day = self.next_business_day(settle_day, rule.due_days) if rule.due_days else settle_day
        return self._zone.to_utc_ms(day, rule.due_minute)

    # ---- calendar -----------------------------------------------------------------------

    def is_business_day(self, ordinal: int) -> bool:
        """Monday to Friday, minus holidays, plus workdays (make-up days)."""
        if ordinal in self._holiday_ordinals:
            return False
        # date.fromordinal(1) is a Monday, so (ordinal - 1) % 7 is date.weekday().
        return (ordinal - 1) % 7 < 5 or ordinal in self._workday_ordinals

    def next_business_day(self, ordinal: int, n: int = 1) -> int:
        """The n-th business day after `ordinal` (n >= 1); with n == 0, `ordinal` itself when it
        is a business day, else the next one."""
        if n == 0:
            while not self.is_business_day(ordinal):
                ordinal += 1
            return ordinal
        for _ in range(n):
            ordinal += 1
            while not self.is_business_day(ordinal):
                ordinal += 1
        return ordinal

    def local_day(self, ms: int, cycle: Cycle | None = None) -> int:
        """The local calendar date of an instant (ordinal), in the cycle's or the policy's zone."""
        zone = self._zone if cycle is None else self._cycle_zones[cycle.index]
        return zone.local_ms(ms) // MS_PER_DAY + _EPOCH_ORDINAL

    def holidays_between(self, start_ms: int, end_ms: int, cycle: Cycle | None = None) -> bool:
        """Whether any non-business day (holiday, or weekend day that is not a workday) has a
        local date touched by the open interval (start_ms, end_ms). Used to label a late
        credit's probable cause holiday_delay."""
        if end_ms - start_ms < 2:
            return False
        first = self.local_day(start_ms + 1, cycle)
        last = self.local_day(end_ms - 1, cycle)
        return any(not self.is_business_day(d) for d in range(first, last + 1))

    def local_time_ms(self, ordinal: int, minute: int = 0) -> int:
        """Local wall time `minute` after midnight of date `ordinal`, in the policy's zone, as
        epoch ms (the later reading in a DST gap or overlap)."""
        return self._zone.to_utc_ms(ordinal, minute)

    # ---- trade dates and deadlines (the hot path) ---------------------------------------

    def trade_day(self, event_time_ms: int, cycle: Cycle) -> int:
        """The sale's trade date as `date.toordinal()`: its local date in the cycle's zone, or
        the next date when it is at or after the cut-off."""
        day = self._bucket_trade_days[cycle.index].get(event_time_ms // _BUCKET_MS)
        return self._trade_day_slow(event_time_ms, cycle.index) if day is None else day

    def deadline_ms(self, event_time_ms: int, cycle: Cycle) -> int:
        """When one sale's credit is due (grace not included): event time + duration, or the
        T+N rule applied to the sale's trade date."""
        if cycle.due_kind == DURATION:
            return event_time_ms + cycle.due_after_ms
        deadline = self._bucket_deadlines[cycle.index].get(event_time_ms // _BUCKET_MS)
        if deadline is None:
            i = cycle.index
            deadline = self.batch_deadline_ms(self._trade_day_slow(event_time_ms, i), cycle)
            bucket = event_time_ms // _BUCKET_MS
            if bucket in self._bucket_trade_days[i]:  # the whole bucket has this trade date
                _put(self._bucket_deadlines[i], bucket, deadline)
        return deadline

    def batch_deadline_ms(self, trade_day: int, cycle: Cycle) -> int:
        """HH:MM local on the N-th business day after `trade_day` (an ordinal). A batch is due
        by its latest sale's trade date: pass the largest `trade_day` of its sales."""
        if cycle.due_kind != BUSINESS:
            raise ValueError(
                f"cycles[{cycle.index}] has a duration due; its deadlines come from deadline_ms"
            )
        memo = self._day_deadlines[cycle.index]
        deadline = memo.get(trade_day)
        if deadline is None:
            due_day = self.next_business_day(trade_day, cycle.due_days)
            deadline = self._cycle_zones[cycle.index].to_utc_ms(due_day, cycle.due_minute)
            memo[trade_day] = deadline
        return deadline

    def _trade_day_exact(self, ms: int, i: int) -> int:
        local = self._cycle_zones[i].local_ms(ms)
        day = local // MS_PER_DAY
        # at or after the cut-off: the next trade date (no cut-off: _cutoff_ms is a full day)
        if local - day * MS_PER_DAY >= self._cutoff_ms[i]:
            day += 1
        return day + _EPOCH_ORDINAL

    def _trade_day_slow(self, ms: int, i: int) -> int:
        """Exact trade date; caches it for the whole 15-minute bucket when it is constant there."""
        zone = self._cycle_zones[i]
        bucket = ms // _BUCKET_MS
        zone.local_ms(ms)  # classifies the bucket: one offset, or an offset change inside
        if bucket in zone.mixed:
            return self._trade_day_exact(ms, i)
        # One offset in the bucket, so local time is monotonic there and so is the trade date:
        # equal at both ends means constant throughout.
        start = bucket * _BUCKET_MS
        first = self._trade_day_exact(start, i)
        if first == self._trade_day_exact(start + _BUCKET_MS - 1, i):
            _put(self._bucket_trade_days[i], bucket, first)
            return first
        return self._trade_day_exact(ms, i)  # the cut-off falls inside this bucket

    # ---- fees ---------------------------------------------------------------------------

    def fee_rule(self, channel: str) -> FeeRule:
        """The channel's rule, else `[fees.default]`, else no fee (0 bps)."""
        return self.fees.get(channel, self._default_fee)

    def fee_minor(self, channel: str, amount_minor: int) -> int:
        """min(round_half_up(amount x bps / 10,000), cap), in integers (FeeRule.fee_minor,
        inlined: once per sale)."""
        bps, cap = self._fee_terms.get(channel, self._default_terms)
        fee = (amount_minor * bps + BPS_DENOMINATOR // 2) // BPS_DENOMINATOR
        return fee if cap is None or fee <= cap else cap

    def fee_bps(self, channel: str) -> int:
        return self.fees.get(channel, self._default_fee).bps

    def all_fee_bps(self) -> frozenset[int]:
        """Every configured rate (channels and default), for the fee_rate_mismatch guess."""
        return self._all_bps


def _put(cache: dict[int, int], key: int, value: int) -> None:
    if len(cache) >= _MAX_CACHED_BUCKETS:
        cache.clear()
    cache[key] = value


# ---- loading ------------------------------------------------------------------------------


def load_policy(path: str | PathLike[str]) -> Policy:
    """Read and validate a settlewatch.toml. Every problem is a PolicyError naming the file
    and the key."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise PolicyError("", f"cannot read: {e.strerror or e}", source=str(path)) from e
    if len(data) > _MAX_CONFIG_BYTES:
        raise PolicyError("", f"larger than {_MAX_CONFIG_BYTES:,} bytes: not a policy file",
                          source=str(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError("", f"not UTF-8 text (byte {e.start}): TOML files are UTF-8",
                          source=str(path)) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError("", f"not valid TOML: {e}", source=str(path)) from e
    except RecursionError:
        # tomllib recurses once per nested array or inline table
        raise PolicyError("", "not valid TOML: arrays or tables nested too deeply",
                          source=str(path)) from None
    try:
        return policy_from_dict(doc)
    except PolicyError as e:
        raise PolicyError(e.key, e.message, source=str(path)) from None


def default_policy() -> Policy:
    """The sample policy shipped in the package (streams/data/settlewatch.toml)."""
    text = (resources.files("streams") / "data" / "settlewatch.toml").read_text("utf-8")
    return policy_from_dict(tomllib.loads(text))


def policy_from_dict(doc: dict[str, Any]) -> Policy:
    """Validate a parsed TOML document (or an equivalent dict) into a Policy."""
    _table(doc, "", _TOP_KEYS)
    if "timezone" not in doc:
        raise PolicyError("timezone", "required (an IANA zone such as 'Asia/Shanghai')")
    tz_name = _timezone(doc["timezone"], "timezone")
    holidays = _dates(doc.get("holidays", []), "holidays")
    workdays = _dates(doc.get("workdays", []), "workdays")
    for i, day in enumerate(workdays):
        if day in holidays:
            raise PolicyError(f"workdays[{i}]", f"{day} is also listed in holidays")
        if day.weekday() < 5:
            raise PolicyError(
                f"workdays[{i}]",
                f"{day} is a {_WEEKDAYS[day.weekday()]}, already a business day "
                "(workdays lists weekend days worked as make-up days)",
            )
    tolerance = _tolerance(doc.get("tolerance", {}), "tolerance")
    fees = _fees(doc.get("fees", {}), "fees")
    cycles = _cycles(doc.get("cycles"), "cycles", tz_name)
    times = _time(doc.get("time", {}), "time")
    files = _settlement_files(doc.get("settlement_files", []), "settlement_files")
    return Policy(
        timezone=tz_name,
        holidays=frozenset(holidays),
        workdays=frozenset(workdays),
        tolerance=tolerance,
        fees=fees,
        cycles=cycles,
        lateness_ms=times["lateness"],
        orphan_after_ms=times["orphan_after"],
        max_future_ms=times["max_future"],
        keep_settled_ms=times["keep_settled"],
        missing_horizon_ms=times["missing_horizon"],
        redelivery_window_ms=times["redelivery_window"],
        aging=_aging(doc["aging"], "aging") if "aging" in doc else DEFAULT_AGING,
        early_warning=_early_warning(doc.get("early_warning", {}), "early_warning"),
        settlement_files=files,
    )


def parse_duration_ms(text: Any, key: str) -> int:
    """'1h30m' -> 5,400,000. Units ms, s, m, h, d, each at most once, largest first."""
    if not isinstance(text, str):
        raise PolicyError(key, f"expected a duration string such as '10m' or '1h30m', got {text!r}")
    s = text.strip()
    if s.startswith("-"):
        raise PolicyError(key, f"a duration cannot be negative, got {text!r}")
    if not _DURATION_RE.fullmatch(s):
        raise PolicyError(
            key, f"expected a duration such as '10m' or '1h30m' (units ms, s, m, h, d), got {text!r}"
        )
    total = 0
    last_unit_ms = None
    for number, unit in _DURATION_PART_RE.findall(s):
        unit_ms = _UNIT_MS[unit]
        if last_unit_ms is not None and unit_ms >= last_unit_ms:
            raise PolicyError(
                key, f"units must each appear once, largest first (as in '1h30m'), got {text!r}"
            )
        last_unit_ms = unit_ms
        total += int(number) * unit_ms
    return total


def _table(value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(key, f"expected a table, got {value!r}")
    for k in value:
        if k not in allowed:
            hint = difflib.get_close_matches(k, allowed, n=1, cutoff=0.5)
            did_you_mean = f"did you mean {hint[0]!r}? " if hint else ""
            raise PolicyError(
                _join(key, k),
                f"unknown key; {did_you_mean}expected one of {', '.join(allowed)}",
            )
    return value


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _int(value: Any, key: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(key, f"expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise PolicyError(key, f"must be {bounds}, got {value}")
    return value


def _timezone(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise PolicyError(key, f"expected an IANA time zone name such as 'Asia/Shanghai', got {_shown(value)}")
    if len(value) > _MAX_ZONE_NAME:
        raise PolicyError(key, f"unknown time zone: {len(value)} characters, where IANA names "
                          f"have at most {_MAX_ZONE_NAME} ({_shown(value)})")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError, UnicodeError) as e:
        # OSError: zoneinfo opens the name as a path under the tz database ("Asia" is a
        # directory there; a long name is ENAMETOOLONG), so a bad name fails as a file would.
        raise PolicyError(key, f"unknown time zone {_shown(value)}") from e
    return value


def _shown(value: Any) -> str:
    """repr of a config value, cut short: an error message quotes the value, not a novel."""
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + f"... ({len(text)} characters)"


def _dates(value: Any, key: str) -> list[date]:
    if not isinstance(value, list):
        raise PolicyError(key, f"expected a list of dates such as [\"2026-10-01\"], got {value!r}")
    out = []
    for i, item in enumerate(value):
        k = f"{key}[{i}]"
        if isinstance(item, date) and not isinstance(item, datetime):
            out.append(item)
            continue
        if isinstance(item, str) and _DATE_RE.fullmatch(item):
            try:
                out.append(date.fromisoformat(item))
                continue
            except ValueError:
                pass
        raise PolicyError(k, f"expected a date YYYY-MM-DD, got {item!r}")
    return out


def _clock_minute(value: Any, key: str) -> int:
    m = _CLOCK_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None or int(m[1]) > 23 or int(m[2]) > 59:
        raise PolicyError(key, f"expected a local time HH:MM from 00:00 to 23:59, got {value!r}")
    return int(m[1]) * 60 + int(m[2])


def _glob(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise PolicyError(key, f"expected a non-empty glob such as 'acq-*' or '*', got {value!r}")
    # fnmatch reads an unclosed '[' literally; in a config that is a typo, not an intent.
    i, n = 0, len(value)
    while i < n:
        if value[i] == "[":
            j = i + 1
            if j < n and value[j] == "!":
                j += 1
            if j < n and value[j] == "]":
                j += 1
            j = value.find("]", j)
            if j < 0:
                raise PolicyError(key, f"bad glob {value!r}: '[' at position {i} is never closed")
            i = j
        i += 1
    return value


def _matches_everything(glob: str) -> bool:
    return set(glob) == {"*"}


def _tolerance(value: Any, key: str) -> Tolerance:
    t = _table(value, key, _TOLERANCE_KEYS)
    return Tolerance(
        absolute_minor=_int(t.get("absolute_minor", 0), _join(key, "absolute_minor"), 0),
        relative_bps=_int(t.get("relative_bps", 0), _join(key, "relative_bps"), 0, BPS_DENOMINATOR),
    )


def _fees(value: Any, key: str) -> dict[str, FeeRule]:
    if not isinstance(value, dict):
        raise PolicyError(key, f"expected a table of [fees.<channel>] tables, got {value!r}")
    fees = {}
    for channel, rule in value.items():
        k = _join(key, channel)
        r = _table(rule, k, _FEE_KEYS)
        if "bps" not in r:
            raise PolicyError(_join(k, "bps"), "required (basis points of the sale, 0 to 10000)")
        cap = r.get("cap_minor")
        fees[channel] = FeeRule(
            bps=_int(r["bps"], _join(k, "bps"), 0, BPS_DENOMINATOR),
            cap_minor=None if cap is None else _int(cap, _join(k, "cap_minor"), 0),
        )
    return fees


def _time(value: Any, key: str) -> dict[str, int]:
    t = _table(value, key, tuple(_DEFAULT_TIME))
    return {
        name: parse_duration_ms(t.get(name, default), _join(key, name))
        for name, default in _DEFAULT_TIME.items()
    }


def _early_warning(value: Any, key: str) -> EarlyWarningConfig:
    t = _table(value, key, tuple(_DEFAULT_EARLY_WARNING))
    d = {**_DEFAULT_EARLY_WARNING, **t}
    if not isinstance(d["enabled"], bool):
        raise PolicyError(_join(key, "enabled"), f"expected true or false, got {_shown(d['enabled'])}")
    step = parse_duration_ms(d["step"], _join(key, "step"))
    lookback = parse_duration_ms(d["lookback"], _join(key, "lookback"))
    if step <= 0:
        raise PolicyError(_join(key, "step"), "must be longer than 0")
    if lookback < step or lookback > 31 * MS_PER_DAY:
        raise PolicyError(_join(key, "lookback"), "must be at least one step and at most 31d")
    return EarlyWarningConfig(
        enabled=d["enabled"],
        window_ms=parse_duration_ms(d["window"], _join(key, "window")),
        step_ms=step,
        lookback_ms=lookback,
        min_history=_int(d["min_history"], _join(key, "min_history"), 1),
        min_due_sales=_int(d["min_due_sales"], _join(key, "min_due_sales"), 1),
        min_expected_pct=_int(d["min_expected_pct"], _join(key, "min_expected_pct"), 1, 100),
        band_pct=_int(d["band_pct"], _join(key, "band_pct"), 0, 50),
        min_lag_ms=parse_duration_ms(d["min_lag"], _join(key, "min_lag")),
        min_shortfall_pct=_int(d["min_shortfall_pct"], _join(key, "min_shortfall_pct"), 0, 100),
    )


def _cycles(value: Any, key: str, default_tz: str) -> tuple[Cycle, ...]:
    if not isinstance(value, list) or not value:
        raise PolicyError(
            key, "required: at least one [[cycles]] table, the last with acquirer = \"*\""
        )
    cycles = tuple(_cycle(item, f"{key}[{i}]", i, default_tz) for i, item in enumerate(value))
    last = cycles[-1]
    if not (_matches_everything(last.acquirer) and _matches_everything(last.merchant_id)):
        raise PolicyError(
            f"{key}[{last.index}]",
            "the last cycle must match every sale (acquirer = \"*\" and merchant_id = \"*\" or "
            f"absent), so that every sale has a deadline; got acquirer {last.acquirer!r}, "
            f"merchant_id {last.merchant_id!r}",
        )
    _check_reachable(cycles, key)
    return cycles


def _check_reachable(cycles: tuple[Cycle, ...], key: str) -> None:
    """The first matching cycle wins, so a cycle that an earlier one covers never applies: a
    duplicate, or anything after a catch-all. Say so instead of silently ignoring it."""
    for later in cycles[1:]:
        for earlier in cycles[:later.index]:
            if not (_glob_covers(earlier.acquirer, later.acquirer)
                    and _glob_covers(earlier.merchant_id, later.merchant_id)):
                continue
            same = (earlier.acquirer, earlier.merchant_id) == (later.acquirer, later.merchant_id)
            what = "duplicates" if same else "is unreachable: every sale it matches is taken by"
            raise PolicyError(
                f"{key}[{later.index}]",
                f"{what} {key}[{earlier.index}] (acquirer {earlier.acquirer!r}, merchant_id "
                f"{earlier.merchant_id!r}), which comes first and wins; remove one, or move the "
                "more specific cycle before the general one",
            )


_GLOB_CHARS = frozenset("*?[")


def _glob_covers(general: str, specific: str) -> bool:
    """True when every name `specific` matches is also matched by `general` (a sound but not
    complete test: equal globs, a match-all, a literal name, or a literal prefix + '*')."""
    if general == specific or _matches_everything(general):
        return True
    if not _GLOB_CHARS & set(specific):
        return fnmatch.fnmatchcase(specific, general)
    stem = general[:-1]
    if general.endswith("*") and not _GLOB_CHARS & set(stem):
        cut = min((specific.index(c) for c in _GLOB_CHARS if c in specific), default=len(specific))
        return specific[:cut].startswith(stem)
    return False


def _cycle(value: Any, key: str, index: int, default_tz: str) -> Cycle:
    c = _table(value, key, _CYCLE_KEYS)
    for required in ("acquirer", "mode", "due"):
        if required not in c:
            raise PolicyError(_join(key, required), "required")
    acquirer = _glob(c["acquirer"], _join(key, "acquirer"))
    merchant_id = _glob(c.get("merchant_id", "*"), _join(key, "merchant_id"))
    mode = c["mode"]
    if mode not in MODES:
        raise PolicyError(_join(key, "mode"), f"expected 'batch' or 'per_sale', got {mode!r}")

    due = c["due"]
    due_key = _join(key, "due")
    bad_due = f"expected 'T+N HH:MM' or '+<duration>', got {due!r}"
    if not isinstance(due, str):
        raise PolicyError(due_key, bad_due)
    due_s = due.strip()
    due_days = due_minute = due_after_ms = 0
    if m := _DUE_BUSINESS_RE.fullmatch(due_s):
        due_kind = BUSINESS
        due_days = int(m[1])
        due_minute = _clock_minute(f"{m[2]}:{m[3]}", due_key)
    elif due_s.startswith("+"):
        due_kind = DURATION
        due_after_ms = parse_duration_ms(due_s[1:], due_key)
    else:
        raise PolicyError(due_key, bad_due)
    if mode == BATCH and due_kind == DURATION:
        raise PolicyError(
            due_key,
            f"a batch cycle needs a 'T+N HH:MM' due (a batch is due by its trade date), got {due!r}",
        )

    cutoff_minute = None
    if "cutoff" in c:
        cutoff_minute = _clock_minute(c["cutoff"], _join(key, "cutoff"))
        if cutoff_minute == 0:
            raise PolicyError(
                _join(key, "cutoff"),
                "00:00 would move every sale to the next day; leave cutoff out for midnight",
            )
    grace_ms = parse_duration_ms(c.get("grace", "0m"), _join(key, "grace"))
    tz_name = _timezone(c["timezone"], _join(key, "timezone")) if "timezone" in c else default_tz
    return Cycle(
        index=index,
        acquirer=acquirer,
        merchant_id=merchant_id,
        mode=mode,
        due_kind=due_kind,
        due_days=due_days,
        due_minute=due_minute,
        due_after_ms=due_after_ms,
        cutoff_minute=cutoff_minute,
        grace_ms=grace_ms,
        timezone=tz_name,
    )


# ---- [aging]: SLA tiers of open findings (used by streams.core.aging) ----------------------

_AGING_KEYS = ("horizon", "tiers")
_AGING_TIER_KEYS = ("name", "min_amount", "min_amount_minor", "min_age_days", "due")
_DEFAULT_AGING_HORIZON = "14d"
_AMOUNT_RE = re.compile(r"(\d{1,15})(?:\.(\d{1,4}))?")
_DUE_BUSINESS_DAYS_RE = re.compile(r"(\d{1,3}) business days?")
_TIER_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


def _aging(value: Any, key: str) -> AgingRules:
    a = _table(value, key, _AGING_KEYS)
    horizon_ms = parse_duration_ms(a.get("horizon", _DEFAULT_AGING_HORIZON), _join(key, "horizon"))
    if horizon_ms <= 0:
        raise PolicyError(_join(key, "horizon"), "must be longer than 0")
    raw = a.get("tiers")
    tiers_key = _join(key, "tiers")
    if raw is None:
        return AgingRules(DEFAULT_AGING.tiers, horizon_ms)
    if not isinstance(raw, list) or not raw:
        raise PolicyError(tiers_key, "expected one or more [[aging.tiers]] entries")
    tiers = tuple(_aging_tier(t, f"{tiers_key}[{i}]") for i, t in enumerate(raw))
    names = [t.name for t in tiers]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise PolicyError(f"{tiers_key}[{i}].name", f"{name!r} is used by an earlier tier")
    for i, t in enumerate(tiers[:-1]):
        if t.min_amount is None and not t.min_amount_minor and t.min_age_days is None:
            raise PolicyError(f"{tiers_key}[{i}]", "a tier with neither min_amount nor "
                              "min_age_days takes every finding: only the last tier may")
    last = tiers[-1]
    if last.min_amount is not None or last.min_amount_minor or last.min_age_days is not None:
        raise PolicyError(f"{tiers_key}[{len(tiers) - 1}]", "the last tier takes every finding "
                          "the others do not: leave out min_amount, min_amount_minor and "
                          "min_age_days")
    return AgingRules(tiers, horizon_ms)


def _aging_tier(value: Any, key: str) -> AgingTier:
    t = _table(value, key, _AGING_TIER_KEYS)
    for required in ("name", "due"):
        if required not in t:
            raise PolicyError(_join(key, required), "required")
    name = t["name"]
    if not isinstance(name, str) or not _TIER_NAME_RE.fullmatch(name):
        raise PolicyError(_join(key, "name"), "expected a lower-case word such as 'critical' "
                          f"(a metric label value), got {_shown(name)}")
    min_amount = None
    if "min_amount" in t:
        amount = t["min_amount"]
        akey = _join(key, "min_amount")
        if isinstance(amount, bool) or isinstance(amount, float):
            raise PolicyError(akey, f"write the amount as a string such as \"100000.00\" "
                              f"(exact decimal, never a float), got {amount!r}")
        if isinstance(amount, int):
            amount = str(amount)
        m = _AMOUNT_RE.fullmatch(amount.replace(",", "")) if isinstance(amount, str) else None
        if m is None:
            raise PolicyError(akey, "expected an amount in major units such as \"100000.00\", "
                              f"got {_shown(amount)}")
        frac = m[2] or ""
        min_amount = (int(m[1] + frac), len(frac))
    by_currency: dict[str, int] = {}
    if "min_amount_minor" in t:
        ckey = _join(key, "min_amount_minor")
        table = t["min_amount_minor"]
        if not isinstance(table, dict):
            raise PolicyError(ckey, f"expected a table of currency = minor units, got {_shown(table)}")
        from .currencies import CURRENCY_CODES
        for code, v in table.items():
            if code not in CURRENCY_CODES:
                raise PolicyError(_join(ckey, code), "not an ISO 4217 currency code")
            by_currency[code] = _int(v, _join(ckey, code), 0)
    min_age = _int(t["min_age_days"], _join(key, "min_age_days"), 0, 3650) \
        if "min_age_days" in t else None
    due = t["due"]
    dkey = _join(key, "due")
    due_ms = due_days = 0
    if isinstance(due, str) and (m := _DUE_BUSINESS_DAYS_RE.fullmatch(due.strip())):
        due_days = int(m[1])
        if due_days == 0:
            raise PolicyError(dkey, "0 business days: write a duration such as '4h' instead")
    elif isinstance(due, str) and _DURATION_RE.fullmatch(due.strip()):
        due_ms = parse_duration_ms(due, dkey)
    else:
        raise PolicyError(dkey, "expected a duration such as '4h' or 'N business days' "
                          f"('1 business day'), got {_shown(due)}")
    return AgingTier(name=name, min_amount=min_amount, min_amount_minor=by_currency,
                     min_age_days=min_age, due_ms=due_ms, due_business_days=due_days,
                     due_text=due.strip())


def _default_tier(name: str, amount: str | None, age: int | None, due: str) -> AgingTier:
    doc: dict[str, Any] = {"name": name, "due": due}
    if amount is not None:
        doc["min_amount"] = amount
    if age is not None:
        doc["min_age_days"] = age
    return _aging_tier(doc, "aging")


# The tiers when the file has no [aging] (the shipped settlewatch.toml spells the same out).
DEFAULT_AGING = AgingRules(
    tiers=(
        _default_tier("critical", "100000.00", 5, "4h"),
        _default_tier("high", "10000.00", 3, "1 business day"),
        _default_tier("medium", "1000.00", 1, "2 business days"),
        _default_tier("low", None, None, "5 business days"),
    ),
    horizon_ms=14 * MS_PER_DAY,
)


def _settlement_files(value: Any, key: str) -> tuple[FileRule, ...]:
    """`[[settlement_files]]`: acquirer (glob) and expected ("T+N HH:MM" after the settle date)."""
    if not isinstance(value, list):
        raise PolicyError(key, f"expected [[settlement_files]] tables, got {_shown(value)}")
    rules = []
    for i, item in enumerate(value):
        k = f"{key}[{i}]"
        t = _table(item, k, _FILE_KEYS)
        for required in _FILE_KEYS:
            if required not in t:
                raise PolicyError(_join(k, required), "required")
        acquirer = _glob(t["acquirer"], _join(k, "acquirer"))
        expected = t["expected"]
        m = _DUE_BUSINESS_RE.fullmatch(expected.strip()) if isinstance(expected, str) else None
        if m is None:
            raise PolicyError(
                _join(k, "expected"),
                f"expected 'T+N HH:MM' (HH:MM local on the N-th business day after the settle "
                f"date; T+0 is the settle date), got {_shown(expected)}")
        minute = _clock_minute(f"{m[2]}:{m[3]}", _join(k, "expected"))
        rules.append(FileRule(index=i, acquirer=acquirer, due_days=int(m[1]), due_minute=minute))
    return tuple(rules)
