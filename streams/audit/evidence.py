"""Evidence as a merchant hands it to its bank: the sales and credits behind a finding, the fee
rule, the settlement terms, and the claim in sentences; `money` for amounts people read."""
from __future__ import annotations

from streams import wire
from streams.core.events import Finding
from streams.core.policy import Policy


def _evidence_for_people(evidence: dict, finding: Finding | None = None,
                         policy: Policy | None = None) -> dict:
    """Evidence as a merchant hands it to its bank: every sale and credit behind the finding
    (masked card number, terminal, times in RFC 3339), the fee rule applied to each sale and
    the net it should have brought, the settlement terms (cycle, due time, cut-off, grace, time
    zone), and a plain-language `statement` of the claim. Times are RFC 3339 only, never epoch
    milliseconds: a 13-digit number passes the card-number (Luhn) check one time in ten, and
    no output file holds one."""
    def times(d: dict) -> dict:
        return {(k[:-3] if k.endswith("_ms") and isinstance(v, int) else k):
                (wire.format_time_ms(v) if k.endswith("_ms") and isinstance(v, int) else v)
                for k, v in d.items()}

    sales = []
    for s in evidence.get("sales", []):
        sale = times(s)
        sale["adjustments"] = [
            {"type": a[0], "event_id": a[1], "amount_minor": a[2],
             "event_time": wire.format_time_ms(a[3]), "netted_into_a_later_credit": a[4]}
            for a in s.get("adjustments") or ()]
        if policy is not None and "channel" in s:
            rule = policy.fee_rule(s["channel"])
            sale["fee_rule"] = {"channel": s["channel"], "bps": rule.bps,
                                "cap_minor": rule.cap_minor}
        if s.get("status") == "approved":
            captured = max(s["amount_minor"] - s.get("reversed_minor", 0), 0)
            sale["expected_net_minor"] = (captured - s.get("fee_minor", 0)
                                          - s.get("refunded_minor", 0))
        else:
            sale["expected_net_minor"] = 0
        sales.append(sale)
    cycle = evidence.get("cycle")
    if cycle is not None and policy is not None and 0 <= cycle.get("index", -1) < len(
            policy.cycles):
        cycle = {**cycle, **_cycle_terms(policy.cycles[cycle["index"]])}
    out = {
        "sales": sales,
        "credits": [times(c) for c in evidence.get("credits", [])],
        "cycle": cycle,
        **({"close": wire.format_time_ms(evidence["close_ms"])} if "close_ms" in evidence else {}),
        **({"cause_detail": evidence["cause_detail"]} if "cause_detail" in evidence else {}),
        # contract v1.1: the settlement file's marker and what was seen for it
        **({"marker": evidence["marker"], "seen": evidence.get("seen")}
           if "marker" in evidence else {}),
    }
    if finding is not None:
        out["statement"] = _statement(finding, out, cycle)
    return out


def _cycle_terms(c) -> dict:
    """A policy cycle's terms as the config file spells them."""
    def hhmm(minute: int) -> str:
        return f"{minute // 60:02d}:{minute % 60:02d}"
    due = (f"T+{c.due_days} {hhmm(c.due_minute)}" if c.due_kind == "business"
           else f"+{_duration(c.due_after_ms)}")
    return {"due": due, "cutoff": None if c.cutoff_minute is None else hhmm(c.cutoff_minute),
            "grace": _duration(c.grace_ms), "timezone": c.timezone}


def _duration(ms: int) -> str:
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000),
                       ("ms", 1)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts) or "0s"


def money(amount_minor: int, currency: str) -> str:
    """1234567 CNY -> '12,345.67 CNY' (the currency's minor-unit digits)."""
    from streams.core.currencies import CURRENCIES
    digits = CURRENCIES.get(currency, (0, 2))[1]
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(amount_minor), 10 ** digits)
    text = f"{whole:,}" + (f".{frac:0{digits}d}" if digits else "")
    return f"{sign}{text} {currency}"


def _statement(f: Finding, ev: dict, cycle: dict | None) -> list[str]:
    """The claim in sentences, from the finding and its evidence."""
    cur = f.currency
    lines = [f"{f.kind.value} ({f.status.value}): merchant {f.merchant_id}, acquirer "
             f"{f.acquirer}, subject {f.subject}"]
    for s in ev["sales"]:
        rule = s.get("fee_rule") or {}
        cap = rule.get("cap_minor")
        fee = (f"fee {money(s.get('fee_minor', 0), cur)} ({s.get('channel')}, "
               f"{rule.get('bps', s.get('fee_bps'))} bps"
               + (f", capped at {money(cap, cur)}" if cap is not None else "") + ")")
        extra = ""
        if s.get("reversed_minor"):
            extra += f", reversed {money(s['reversed_minor'], cur)}"
        if s.get("refunded_minor"):
            extra += f", refunded {money(s['refunded_minor'], cur)}"
        # A word between every id and the number after it, and the card last: a card-number
        # scan reads "T0000480: 5,430.40" or "******1111: 1,234,567.89" as one 13-digit run.
        lines.append(f"sale {s['auth_id']} at {s['event_time']} on terminal {s['terminal_id']}"
                     f", amount {money(s['amount_minor'], cur)} {s['status']}, {fee}{extra}"
                     f", net due {money(s['expected_net_minor'], cur)}"
                     f"; card {s.get('pan_masked') or 'not given'}")
    for c in ev["credits"]:
        lines.append(f"credit {c['credit_id']} booked {c['event_time']}, amount "
                     f"{money(c['amount_minor'], c['currency'])}"
                     + (f" (acquirer's fee {money(c['fee_minor'], c['currency'])})"
                        if c.get("fee_minor") is not None else ""))
    marker = ev.get("marker")
    if f.kind.value == "file_incomplete" and marker is not None:
        seen = ev.get("seen") or {}
        lines.append(f"settlement file {marker['marker_id']} of {marker['acquirer']} for settle "
                     f"date {marker['settle_date']} lists {marker['credit_count']:,} credits, "
                     f"total {money(marker['total_minor'], cur)}; seen for that merchant, "
                     f"acquirer and date: {seen.get('credit_count', 0):,} credits, total "
                     f"{money(seen.get('total_minor', 0), cur)}")
        if f.deadline_ms is not None:
            lines.append(f"the file was expected by {wire.format_time_ms(f.deadline_ms)}")
    elif f.kind.value == "orphan" and f.deadline_ms is not None:
        lines.append(f"no sale or batch of the merchant matched it by "
                     f"{wire.format_time_ms(f.deadline_ms)}")
    elif f.deadline_ms is not None:
        terms = ""
        if cycle and "due" in cycle:
            due = cycle["due"] + (f" {cycle['timezone']}" if cycle["due"].startswith("T")
                                  else " after the sale")
            terms = (f" (cycle {cycle['mode']}, due {due}"
                     + (f", cut-off {cycle['cutoff']}" if cycle.get("cutoff") else "")
                     + f", grace {cycle['grace']})")
        lines.append(f"due by {wire.format_time_ms(f.deadline_ms)}{terms}")
    lines.append(f"expected {money(f.expected_minor, cur)}, received "
                 f"{money(f.received_minor, cur)}, difference {money(f.difference_minor, cur)}"
                 + (f"; probable cause: {f.probable_cause}" if f.probable_cause else "")
                 + _cause_words(ev.get("cause_detail"), cur))
    # Ids and amounts side by side can still spell a Luhn-valid digit run: mask any, as the
    # dead letters do, so that no evidence file holds what reads as a card number.
    return [wire.mask_pans_text(line) if wire.text_has_pan(line) else line for line in lines]


def _cause_words(d: dict | None, cur: str) -> str:
    """What the probable cause found (streams.core.causes detail), in a few words."""
    if not d:
        return ""
    def bps(rates: dict) -> str:
        return ", ".join(f"{ch} {r} bps" for ch, r in rates.items())
    words = []
    if d.get("fee_bps_charged"):
        words.append(f"fee charged {bps(d['fee_bps_charged'])}")
        if d.get("agreed_bps"):
            words.append(f"agreed {bps(d['agreed_bps'])}")
        if d.get("model") in ("common_offset", "stated_fee") and d.get("per_channel") is False:
            words.append("a common offset over the agreed rates: one credit cannot tell the "
                         "channels' rates apart")
    if d.get("model") == "cap_ignored":
        words.append("per-sale caps not applied: " + ", ".join(
            f"{ch} {money(cap, cur)}" for ch, cap in d.get("caps_minor", {}).items()))
    if d.get("fee_minor_stated") is not None:
        words.append(f"acquirer's fee {money(d['fee_minor_stated'], cur)}, agreed "
                     f"{money(d['fee_minor_agreed'], cur)}")
    netted = d.get("netted") or (d.get("with") or {}).get("netted")
    if netted:
        words.append(f"{netted['type']} {netted['event_id']} of sale {netted['auth_id']} for "
                     f"{money(netted['amount_minor'], cur)}, netted in")
    if d.get("model") in ("missing_sale", "declined_sale"):
        words.append(f"sale {d['auth_id']} for {money(d['amount_minor'], cur)}")
    if d.get("rounding"):
        words.append(f"fees rounded {d['rounding'].replace('_', ' ')}")
    marker = d.get("marker")  # contract v1.1: the settlement file came complete without it
    if marker:
        words.append(f"settlement file {marker['marker_id']} for {marker['settle_date']} "
                     f"complete without it")
    return f" ({'; '.join(words)})" if words else ""


