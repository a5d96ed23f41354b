"""docs/configuration.md, generated from the code so that it cannot drift:

    python -m streams.ops.configref            # rewrite docs/configuration.md
    python -m streams.ops.configref --check    # exit 1 if it is stale (tests/deploy runs this)

Sources, each checked as it is read:
- `settlewatch.toml` keys: the key lists of the policy loader (streams.core.policy), each
  described by its row in docs/policy.md (a key without a row, or a row without a key, fails);
- `settlewatch worker` options: the click command itself (flag, SETTLEWATCH_* variable, help);
- other SETTLEWATCH_* variables: every name used in streams/, grafana/provisioning/ and the
  deploy files, described by the `NAME   description` line beside it in its file's docstring or
  comments (a name without one fails);
- SW_* variables: the environment headers of deploy/local/stack and deploy/local/monitoring.sh
  (every SW_* name those scripts or the package read must be there, or be one the scripts set
  for themselves, listed in INTERNAL), and the variables deploy/compose/docker-compose.yml reads.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "configuration.md"
POLICY_DOC = REPO / "docs" / "policy.md"
SCRIPTS = (REPO / "deploy" / "local" / "stack", REPO / "deploy" / "local" / "monitoring.sh")
COMPOSE = REPO / "deploy" / "compose" / "docker-compose.yml"

# SW_* names the scripts and the worker set for themselves: not settings.
INTERNAL = {
    "SW_ACQUIRER_ROUTES": "placeholder in alerts/alertmanager.yml.tmpl, filled from SW_ACQUIRER_CONTACTS",
    "SW_ACQUIRER_RECEIVERS": "placeholder in alerts/alertmanager.yml.tmpl, filled from SW_ACQUIRER_CONTACTS",
    "SW_ALERTS_DIR": "placeholder in alerts/alertmanager.yml.tmpl (the repository's alerts/)",
    "SW_RENDER_DIR": "placeholder in alerts/alertmanager.yml.tmpl (where it is rendered)",
    "SW_SMTP_SMARTHOST": "placeholder in alerts/alertmanager.yml.tmpl (SW_SMTP_HOST:SW_SMTP_PORT)",
    "SW_BOOTSTRAP": "deploy/local/stack -> its topic-creation step",
    "SW_DEADLINE_S": "deploy/local/stack -> its topic-creation step",
    "SW_AUDIT_TOPICS": "deploy/local/stack -> its topic-creation step",
    "SW_OTHER_TOPICS": "deploy/local/stack -> its topic-creation step",
    "SW_SCRAM_USER": "deploy/local/stack -> its SCRAM-user step (SASL listener)",
    "SW_SCRAM_PASSWORD_FILE": "deploy/local/stack -> its SCRAM-user step (SASL listener)",
    "SW_LIVE_SELF_RESTARTS": "the worker's count of its own in-place restarts (faust_compat)",
}

# SETTLEWATCH_* prefixes the deploy files may set before the module that reads them is merged
# (branch secfault): accepted while that module is absent; once it exists, its docstring
# describes them like any other variable.
PENDING = {"SETTLEWATCH_KAFKA_": REPO / "streams" / "kafka_security.py"}

SW_NAME = re.compile(r"\bSW_[A-Z0-9_]*[A-Z0-9]\b")
SETTLEWATCH_NAME = re.compile(r"\bSETTLEWATCH_[A-Z0-9_]*[A-Z0-9]\b")


class Drift(Exception):
    """The code and its documentation disagree (the message says where)."""


# ------------------------------------------------------------------------------ the policy

_POLICY_SECTIONS = (  # (heading in docs/policy.md, prefix in the reference, loader's key list)
    ("Top level", "", "_TOP_KEYS"),
    ("`[tolerance]`", "tolerance.", "_TOLERANCE_KEYS"),
    ("`[fees.<channel>]`", "fees.<channel>.", "_FEE_KEYS"),
    ("`[[cycles]]`", "cycles[].", "_CYCLE_KEYS"),
    ("`[time]`", "time.", "_DEFAULT_TIME"),
    ("`[aging]`", "aging.", "_AGING_KEYS"),
    ("`[[aging.tiers]]`", "aging.tiers[].", "_AGING_TIER_KEYS"),
    ("`[early_warning]`", "early_warning.", "_DEFAULT_EARLY_WARNING"),
)


def _doc_tables(text: str) -> dict[str, list[list[str]]]:
    """Heading (without '## ') -> rows of the first table under it, as cells."""
    tables: dict[str, list[list[str]]] = {}
    heading = None
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
            continue
        if heading and line.startswith("|") and not re.match(r"\|\s*-", line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows = tables.setdefault(heading, [])
            if rows or cells[0] == "key":
                rows.append(cells)
        elif heading in tables and not line.startswith("|"):
            heading = None if tables[heading] else heading
    return tables


def policy_rows() -> list[tuple[str, str, str]]:
    """(key, default, meaning) for every key the policy loader accepts."""
    from streams.core import policy
    tables = _doc_tables(POLICY_DOC.read_text())
    out = []
    for heading, prefix, attr in _POLICY_SECTIONS:
        keys = getattr(policy, attr, None)
        if keys is None:
            raise Drift(f"streams.core.policy has no {attr} (the loader's keys moved?)")
        rows = tables.get(heading)
        if not rows:
            raise Drift(f"docs/policy.md has no table under '## {heading}'")
        header, *body = rows
        described = {}
        for cells in body:
            m = re.fullmatch(r"`\[*([a-z_]+)[.<>a-z]*\]*`", cells[0])
            if m:
                described[m.group(1)] = dict(zip(header, cells))
        for key in keys:
            if key not in described:
                raise Drift(f"docs/policy.md '## {heading}' does not describe key {key!r}")
        for key in described:
            if key not in keys:
                raise Drift(f"docs/policy.md '## {heading}' describes {key!r}, which the "
                            f"loader does not accept")
        for key in keys:
            row = described[key]
            default = row.get("default", "")
            if not default and row.get("required") == "yes":
                default = "required"
            if not default and row.get("required") == "no":
                default = "none"
            if isinstance(keys, dict) and not default:
                default = f'`"{keys[key]}"`'
            out.append((prefix + key, default, row.get("meaning", "")))
    return out


# ------------------------------------------------------------------------------ the worker

def worker_rows() -> list[tuple[str, str, str]]:
    """(flag, variable, help) of every `settlewatch worker` option."""
    from streams.live.command import worker_command
    out = []
    for p in worker_command.params:
        if getattr(p, "hidden", False) or not getattr(p, "opts", None):
            continue
        if not p.envvar:
            raise Drift(f"settlewatch worker {p.opts[0]} has no SETTLEWATCH_* variable")
        out.append((p.opts[0], p.envvar, " ".join((p.help or "").split())))
    return out


# ------------------------------------------------------------------------------ variables

def _code_files() -> list[Path]:
    files = sorted(p for p in (REPO / "streams").rglob("*.py") if p != Path(__file__).resolve())
    files += sorted((REPO / "grafana" / "provisioning").rglob("*.yaml"))
    return files


def _deploy_files() -> list[Path]:
    files = [REPO / "Dockerfile", *SCRIPTS]
    for sub in ("compose", "k8s", "systemd"):
        files += sorted(p for p in (REPO / "deploy" / sub).rglob("*") if p.is_file()
                        and p.suffix not in (".md", ".py", ".toml"))
    return [f for f in files if f.exists()]


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _describe(name: str, text: str) -> str | None:
    """The `NAME   description` line (docstring or comment) for `name` in `text`."""
    m = re.search(rf"^[ \t#]*{name}(=\S+)?(?:,[ \t]*[A-Z_]+)*[ \t]{{2,}}(\S.*)$", text, re.M)
    if m:
        desc = m.group(2)
        column = m.start(2) - (text.rfind("\n", 0, m.start(2)) + 1)
        for line in text[m.end():].split("\n")[1:]:  # continuation lines, aligned with it
            stripped = line.lstrip(" \t#")
            if not stripped or len(line) - len(stripped) < column:
                break
            desc += " " + stripped
        desc = " ".join(desc.split())
        return f"`{name}{m.group(1)}`: {desc}" if m.group(1) else desc
    if re.search(rf"^[ \t#]*{name}[ \t]*$", text, re.M):  # listed, its meaning in its name
        return ""
    return None


def other_settlewatch_rows(worker_vars: set[str]) -> list[tuple[str, str, str]]:
    """(variable, where, description) of every SETTLEWATCH_* name that is not a worker option."""
    found: dict[str, tuple[str, str]] = {}
    for path in _code_files():
        text = path.read_text()
        for name in sorted(set(SETTLEWATCH_NAME.findall(text)) - worker_vars):
            if name in found:
                continue
            desc = _describe(name, text)
            if desc is None:
                raise Drift(f"{_rel(path)} uses {name} without a "
                            f"'{name}   description' line")
            found[name] = (_rel(path), desc)
    for path in _deploy_files():
        for name in set(SETTLEWATCH_NAME.findall(path.read_text())):
            pending = [m for prefix, m in PENDING.items() if name.startswith(prefix)]
            if pending and not pending[0].exists():
                continue
            if name not in worker_vars and name not in found and name not in compose_vars():
                raise Drift(f"{path.relative_to(REPO)} sets {name}, which no code reads")
    return [(name, where, desc) for name, (where, desc) in sorted(found.items())]


def script_rows() -> list[tuple[str, str, str]]:
    """(variable, script, description) from the environment headers of the stack scripts."""
    out: dict[str, tuple[str, str]] = {}
    for path in SCRIPTS:
        header = []
        for line in path.read_text().splitlines()[1:]:
            if not line.startswith("#"):
                break
            header.append(line)
        current: list[str] = []
        desc: list[str] = []

        def close():
            for n in current:
                out.setdefault(n, (path.name, " ".join(" ".join(desc).split())))

        for line in header:
            m = re.match(r"#\s+((?:SW_[A-Z0-9_]+)(?:,\s*SW_[A-Z0-9_]+)*)\s+(.*)$", line)
            if m:
                close()
                current = re.findall(r"SW_[A-Z0-9_]+", m.group(1))
                desc = [m.group(2)]
            elif current and re.match(r"#\s{6,}\S", line):
                desc.append(line.lstrip("# "))
            else:
                close()
                current, desc = [], []
        close()
    used = set()
    for path in [*SCRIPTS, *_code_files()]:
        used |= set(SW_NAME.findall(path.read_text()))
    for name in sorted(used - set(out) - set(INTERNAL)):
        raise Drift(f"{name} is read but not in the environment header of "
                    f"deploy/local/stack or deploy/local/monitoring.sh")
    return [(name, script, desc) for name, (script, desc) in sorted(out.items())]


def compose_vars() -> dict[str, str]:
    """Variables deploy/compose/docker-compose.yml reads -> their default."""
    if not COMPOSE.exists():
        return {}
    found = {}
    for m in re.finditer(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}", COMPOSE.read_text()):
        found.setdefault(m.group(1), m.group(2) or "")
    return found


# ------------------------------------------------------------------------------ the page

def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def generate() -> str:
    worker = worker_rows()
    worker_vars = {v for _, v, _ in worker}
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m streams.ops.configref` from the code; do not edit. "
        "tests/deploy/test_configuration.py fails when it is stale. -->",
        "",
        "Everything settlewatch reads: the policy file, the worker's options and their "
        "`SETTLEWATCH_*` variables, other `SETTLEWATCH_*` variables, and the `SW_*` variables "
        "of the local stack and the compose file.",
        "",
        "## `settlewatch.toml` (the policy)",
        "",
        "Checked by `settlewatch check-config --config FILE`; formats and examples in "
        "[policy.md](policy.md).",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{k}` | {_cell(d)} | {_cell(m)} |" for k, d, m in policy_rows()]
    lines += [
        "",
        "## `settlewatch worker` options",
        "",
        "Each option is also read from its variable (the option wins); `faust -A "
        "streams.live.faust_app worker` reads the variables only. Durations as in the policy "
        "(`1s`, `15m`); a default in brackets.",
        "",
        "| option | variable | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{f}` | `{v}` | {_cell(h)} |" for f, v, h in worker]
    others = other_settlewatch_rows(worker_vars)
    lines += [
        "",
        "## Other `SETTLEWATCH_*` variables",
        "",
        "| variable | read by | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{n}` | `{w}` | {_cell(d) or 'see ' + w} |" for n, w, d in others]
    lines += [
        "",
        "## `SW_*`: the local stack (`deploy/local/stack`, `deploy/local/monitoring.sh`)",
        "",
        "| variable | script | meaning [default] |",
        "|---|---|---|",
    ]
    lines += [f"| `{n}` | `{s}` | {_cell(d)} |" for n, s, d in script_rows()]
    compose = compose_vars()
    if compose:
        lines += [
            "",
            "## Docker Compose (`deploy/compose/docker-compose.yml`)",
            "",
            "Ports and meanings: [deploy/README.md](../deploy/README.md#docker-compose-deploycompose).",
            "",
            "| variable | default |",
            "|---|---|",
        ]
        lines += [f"| `{n}` | {_cell(d) or '(empty)'} |" for n, d in sorted(compose.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    try:
        text = generate()
    except Drift as exc:
        print(f"configref: {exc}", file=sys.stderr)
        return 2
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"configref: {OUT.relative_to(REPO)} is stale: run python -m "
                  f"streams.ops.configref", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
