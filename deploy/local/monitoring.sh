# shellcheck shell=bash
# settlewatch local monitoring: Prometheus and Alertmanager, from Debian's packages.
#
# Sourced (not run) by deploy/local/stack, which calls:
#   monitoring_up       install if missing, render configs, start both, wait until ready
#   monitoring_down     stop what monitoring_up started (pid files), keep data
#   monitoring_status   one line per component; returns 1 if one is not ready
# Quick use without the stack script:
#   bash -c '. deploy/local/monitoring.sh && monitoring_up'
#
# Environment (defaults in brackets):
#   SW_RUN_DIR             data, logs, pid files, rendered configs [deploy/local/run]
#   SW_PROMETHEUS_PORT     [9090]
#   SW_ALERTMANAGER_PORT   [9095] (9093 is Kafka's controller listener)
#   SW_METRICS_TARGETS     comma-separated host:port of the workers' /metrics [127.0.0.1:9308]
#   SW_SCRAPE_INTERVAL     scrape and rule evaluation interval [5s]
#   SW_PROMETHEUS_RETENTION  TSDB retention [15d] (the delay alert compares with 7 days)
#   SW_SMTP_HOST, SW_SMTP_PORT          [127.0.0.1, 2525] (settlewatch smtp-sink)
#   SW_SMTP_FROM, SW_SMTP_TO            [settlewatch@localhost, ops@localhost]
#   SW_SMTP_TO_ONCALL      address for critical pages [SW_SMTP_TO]
#   SW_SMTP_USERNAME       empty: no SMTP AUTH []
#   SW_SMTP_PASSWORD_FILE  file holding the SMTP password and nothing else (no trailing
#                          newline: Alertmanager 0.25 sends the bytes as they are); Alertmanager
#                          reads it itself, the password never enters the rendered config []
#   SW_SMTP_REQUIRE_TLS    STARTTLS required [false for 127.0.0.1/localhost, true otherwise]
#   SW_RUNBOOK_BASE_URL    prefix for the rules' runbook_url (alerts/runbook.md#...) in mails,
#                          e.g. https://git.example.com/settlewatch/-/blob/main/ []
#   SW_ACQUIRER_CONTACTS   "ACQ-A=a@bank.example,ACQ-B=b@bank.example": each acquirer's
#                          settlement alerts are also mailed to its contact []
#
# Alertmanager 0.25 does not expand environment variables in its config, so alertmanager.yml is
# rendered here from alerts/alertmanager.yml.tmpl and checked with amtool before it is used.

_SWM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

_swm_log() { printf 'monitoring: %s\n' "$*" >&2; }

# Resolve settings into _SWM_* globals (the caller's SW_* variables are left untouched).
_swm_env() {
    _SWM_RUN=${SW_RUN_DIR:-$_SWM_ROOT/deploy/local/run}
    _SWM_DIR=$_SWM_RUN/monitoring
    _SWM_PROM_PORT=${SW_PROMETHEUS_PORT:-9090}
    _SWM_AM_PORT=${SW_ALERTMANAGER_PORT:-9095}
    _SWM_TARGETS=${SW_METRICS_TARGETS:-127.0.0.1:9308}
    _SWM_INTERVAL=${SW_SCRAPE_INTERVAL:-5s}
    _SWM_SMTP_HOST=${SW_SMTP_HOST:-127.0.0.1}
    _SWM_SMTP_PORT=${SW_SMTP_PORT:-2525}
    case $_SWM_SMTP_HOST in
        127.0.0.1 | localhost | ::1) _SWM_SMTP_TLS=${SW_SMTP_REQUIRE_TLS:-false} ;;
        *) _SWM_SMTP_TLS=${SW_SMTP_REQUIRE_TLS:-true} ;;
    esac
    _SWM_PROMETHEUS=$(command -v prometheus || true)
    _SWM_PROMTOOL=$(command -v promtool || true)
    _SWM_ALERTMANAGER=$(command -v alertmanager || command -v prometheus-alertmanager || true)
    _SWM_AMTOOL=$(command -v amtool || true)
}

# Install Debian's prometheus and prometheus-alertmanager when a binary is missing, without
# letting the packages' own services start (they would take ports 9090/9093/9094).
monitoring_install() {
    _swm_env
    if [[ -n $_SWM_PROMETHEUS && -n $_SWM_PROMTOOL && -n $_SWM_ALERTMANAGER && -n $_SWM_AMTOOL ]]; then
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        _swm_log "prometheus/alertmanager missing and not root: apt-get install prometheus prometheus-alertmanager"
        return 1
    fi
    _swm_log "installing prometheus and prometheus-alertmanager (apt-get)"
    local policy=/usr/sbin/policy-rc.d own_policy=0 rc=0
    if [[ ! -e $policy ]]; then
        # exit 101 = "action forbidden": invoke-rc.d then starts no service during the install.
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
    fi
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                prometheus prometheus-alertmanager
    } >"${TMPDIR:-/tmp}/settlewatch-apt.log" 2>&1 || rc=$?
    if ((own_policy)); then rm -f "$policy"; fi
    if ((rc != 0)); then
        _swm_log "apt-get failed (rc=$rc); last lines of ${TMPDIR:-/tmp}/settlewatch-apt.log:"
        tail -n 20 "${TMPDIR:-/tmp}/settlewatch-apt.log" >&2
        return 1
    fi
    # Belt and braces, for hosts where systemd runs: the packaged services stay off.
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl disable --now prometheus prometheus-alertmanager >/dev/null 2>&1 || true
    fi
    _swm_env
    if [[ -z $_SWM_PROMETHEUS || -z $_SWM_PROMTOOL || -z $_SWM_ALERTMANAGER || -z $_SWM_AMTOOL ]]; then
        _swm_log "install finished but a binary is still missing (prometheus promtool alertmanager amtool)"
        return 1
    fi
}

# YAML single-quoted scalar: ' doubles.
_swm_q() { local s=${1//\'/\'\'}; printf "'%s'" "$s"; }

_swm_render_prometheus() {
    local out=$_SWM_DIR/prometheus.yml targets="" t
    local IFS=,
    for t in $_SWM_TARGETS; do
        t=${t// /}
        [[ -n $t ]] && targets+="          - $(_swm_q "$t")"$'\n'
    done
    unset IFS
    if [[ -z $targets ]]; then
        _swm_log "SW_METRICS_TARGETS is empty"
        return 1
    fi
    cat >"$out" <<EOF
# Rendered by deploy/local/monitoring.sh; edits are overwritten by the next monitoring_up.
global:
  scrape_interval: $_SWM_INTERVAL
  evaluation_interval: $_SWM_INTERVAL
  external_labels:
    environment: local
rule_files:
  - $(_swm_q "$_SWM_ROOT/alerts/*.rules.yaml")
alerting:
  alertmanagers:
    - static_configs:
        - targets: [$(_swm_q "127.0.0.1:$_SWM_AM_PORT")]
scrape_configs:
  # The alert rules select job="settlewatch": keep this job name.
  - job_name: settlewatch
    scrape_interval: $_SWM_INTERVAL
    static_configs:
      - targets:
$targets
EOF
}

# alerts/alertmanager.yml.tmpl -> $_SWM_DIR/alertmanager.yml. Placeholders are ${NAME} for the
# names below only; values are inserted as YAML single-quoted strings where the template quotes
# them (the template writes '${NAME}' and the value's own quotes are doubled).
_swm_render_alertmanager() {
    local tmpl=$_SWM_ROOT/alerts/alertmanager.yml.tmpl out=$_SWM_DIR/alertmanager.yml
    local text name value
    text=$(<"$tmpl") || return 1
    local -A vals=(
        [SW_SMTP_SMARTHOST]="$_SWM_SMTP_HOST:$_SWM_SMTP_PORT"
        [SW_SMTP_FROM]=${SW_SMTP_FROM:-settlewatch@localhost}
        [SW_SMTP_TO]=${SW_SMTP_TO:-ops@localhost}
        [SW_SMTP_TO_ONCALL]=${SW_SMTP_TO_ONCALL:-${SW_SMTP_TO:-ops@localhost}}
        [SW_SMTP_USERNAME]=${SW_SMTP_USERNAME:-}
        [SW_SMTP_PASSWORD_FILE]=${SW_SMTP_PASSWORD_FILE:-}
        [SW_SMTP_REQUIRE_TLS]=$_SWM_SMTP_TLS
        [SW_ALERTS_DIR]=$_SWM_ROOT/alerts
        [SW_RENDER_DIR]=$_SWM_DIR
    )
    if [[ -n ${vals[SW_SMTP_USERNAME]} && ! -r ${vals[SW_SMTP_PASSWORD_FILE]} ]]; then
        _swm_log "SW_SMTP_USERNAME is set but SW_SMTP_PASSWORD_FILE (${vals[SW_SMTP_PASSWORD_FILE]}) is not a readable file"
        return 1
    fi
    # Alertmanager 0.25 sends the file's bytes as they are: a trailing newline (echo pw >file)
    # becomes part of the password and the relay answers 535.
    if [[ -n ${vals[SW_SMTP_PASSWORD_FILE]} && -s ${vals[SW_SMTP_PASSWORD_FILE]} &&
        $(tail -c 1 "${vals[SW_SMTP_PASSWORD_FILE]}" | od -An -c | tr -d ' ') == '\n' ]]; then
        _swm_log "SW_SMTP_PASSWORD_FILE ends with a newline, which Alertmanager would send as part of the password; write it with printf '%s' \"\$password\" >file"
        return 1
    fi
    case ${vals[SW_SMTP_REQUIRE_TLS]} in true | false) ;; *)
        _swm_log "SW_SMTP_REQUIRE_TLS must be true or false"
        return 1
        ;;
    esac
    for name in "${!vals[@]}"; do
        value=${vals[$name]//\'/\'\'}
        # Quoted replacement: bash 5.2 would otherwise expand & in it.
        text=${text//"\${$name}"/"$value"}
    done
    text=${text//"\${SW_ACQUIRER_ROUTES}"/"$(_swm_acquirer_routes)"}
    text=${text//"\${SW_ACQUIRER_RECEIVERS}"/"$(_swm_acquirer_receivers)"}
    if [[ $text == *'${'* ]]; then
        _swm_log "unrendered placeholder in $tmpl: $(grep -o '[$][{][^}]*[}]' <<<"$text" | sort -u | tr '\n' ' ')"
        return 1
    fi
    printf '%s\n' "$text" >"$out"
    chmod 600 "$out"
    # The runbook links in the rules are paths in the repository; mails prefix this base.
    mkdir -p "$_SWM_DIR/templates" || return 1
    local base=${SW_RUNBOOK_BASE_URL:-}
    base=${base//'{{'/} base=${base//'}}'/}
    printf '{{ define "settlewatch.runbook_base" }}%s{{ end }}\n' "$base" \
        >"$_SWM_DIR/templates/runbook_base.tmpl"
}

# SW_ACQUIRER_CONTACTS="ACQ=addr,..." -> child routes of the settlement route (continue: true,
# so the acquirer's contact gets a copy and ops still get theirs) and one receiver each.
_swm_acquirer_pairs() {
    local IFS=, pair
    for pair in ${SW_ACQUIRER_CONTACTS:-}; do
        pair=${pair// /}
        [[ $pair == ?*=?* ]] && printf '%s\n' "$pair"
    done
}
_swm_acquirer_routes() {
    local pair acq
    while IFS= read -r pair; do
        acq=${pair%%=*}
        printf '        - receiver: %s\n' "$(_swm_q "acquirer-$acq")"
        printf '          matchers: [%s]\n' "$(_swm_q "acquirer=\"$acq\"")"
        printf '          continue: true\n'
    done < <(_swm_acquirer_pairs)
}
_swm_acquirer_receivers() {
    local pair acq addr
    while IFS= read -r pair; do
        acq=${pair%%=*}
        addr=${pair#*=}
        printf '  - name: %s\n' "$(_swm_q "acquirer-$acq")"
        printf '    email_configs:\n'
        printf '      - to: %s\n' "$(_swm_q "$addr")"
        printf '        send_resolved: true\n'
        printf '        headers: { Subject: %s }\n' "'{{ template \"settlewatch.email.subject\" . }}'"
        printf '        html: %s\n' "'{{ template \"settlewatch.email.html\" . }}'"
        printf '        text: %s\n' "'{{ template \"settlewatch.email.text\" . }}'"
    done < <(_swm_acquirer_pairs)
}

# Render both configs into $_SWM_DIR and check them with promtool and amtool.
monitoring_render() {
    _swm_env
    mkdir -p "$_SWM_DIR" || return 1
    _swm_render_prometheus && _swm_render_alertmanager || return 1
    local out
    if ! out=$("$_SWM_PROMTOOL" check config "$_SWM_DIR/prometheus.yml" 2>&1); then
        _swm_log "promtool check config failed:"; printf '%s\n' "$out" >&2; return 1
    fi
    if ! out=$("$_SWM_AMTOOL" check-config "$_SWM_DIR/alertmanager.yml" 2>&1); then
        _swm_log "amtool check-config failed:"; printf '%s\n' "$out" >&2; return 1
    fi
}

# The pid in a pid file, if that process is alive and runs the expected binary.
_swm_pid() {
    local file=$1 bin=$2 pid
    [[ -r $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    # A recycled pid running something else is not ours.
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$(readlink -f "$bin")" ]] || return 1
    printf '%s\n' "$pid"
}

_swm_port_busy() { ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }

# The lines of a log that say what went wrong, then its last lines.
_swm_log_tail() {
    local log=$1
    grep -iE 'error|level=(error|fatal)|err=' "$log" 2>/dev/null | tail -n 5 | sed 's/^/  ! /' >&2
    tail -n 15 "$log" 2>/dev/null | sed 's/^/  | /' >&2
}

_swm_ready() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/-/ready" 2>/dev/null; }

# _swm_start NAME BINARY PORT ARGS...: start in the background, pid file, wait for /-/ready.
_swm_start() {
    local name=$1 bin=$2 port=$3
    shift 3
    local pidf=$_SWM_DIR/$name.pid log=$_SWM_DIR/$name.log pid i
    if pid=$(_swm_pid "$pidf" "$bin"); then
        # Already ours and running: reload the freshly rendered config instead of restarting.
        if curl -fsS -o /dev/null --max-time 5 -X POST "http://127.0.0.1:$port/-/reload"; then
            _swm_log "$name already running (pid $pid), config reloaded"
            return 0
        fi
        _swm_log "$name (pid $pid) is running but did not reload its config; its log says:"
        _swm_log_tail "$log"
        return 1
    fi
    if _swm_port_busy "$port"; then
        _swm_log "port $port for $name is taken by another process:"
        ss -Htlnp "sport = :$port" >&2
        return 1
    fi
    nohup "$bin" "$@" >"$log" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$pidf"
    for ((i = 0; i < 300; i++)); do # 30 s
        if _swm_ready "$port"; then
            _swm_log "$name ready on 127.0.0.1:$port (pid $pid, log $log)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            _swm_log "$name exited during start; its log ($log) says:"
            _swm_log_tail "$log"
            rm -f "$pidf"
            return 1
        fi
        sleep 0.1
    done
    _swm_log "$name not ready on port $port after 30 s; its log ($log) says:"
    _swm_log_tail "$log"
    return 1
}

monitoring_up() {
    monitoring_install || return 1
    monitoring_render || return 1
    mkdir -p "$_SWM_DIR/prometheus-data" "$_SWM_DIR/alertmanager-data" || return 1
    _swm_start alertmanager "$_SWM_ALERTMANAGER" "$_SWM_AM_PORT" \
        --config.file="$_SWM_DIR/alertmanager.yml" \
        --storage.path="$_SWM_DIR/alertmanager-data" \
        --web.listen-address="127.0.0.1:$_SWM_AM_PORT" \
        --web.external-url="http://127.0.0.1:$_SWM_AM_PORT/" \
        --cluster.listen-address= ||
        return 1
    _swm_start prometheus "$_SWM_PROMETHEUS" "$_SWM_PROM_PORT" \
        --config.file="$_SWM_DIR/prometheus.yml" \
        --storage.tsdb.path="$_SWM_DIR/prometheus-data" \
        --storage.tsdb.retention.time="${SW_PROMETHEUS_RETENTION:-15d}" \
        --web.listen-address="127.0.0.1:$_SWM_PROM_PORT" \
        --web.external-url="http://127.0.0.1:$_SWM_PROM_PORT/" \
        --web.enable-lifecycle ||
        return 1
}

# _swm_stop NAME BINARY: TERM, wait up to 10 s, then KILL.
_swm_stop() {
    local name=$1 bin=$2 pidf=$_SWM_DIR/$1.pid pid i
    if ! pid=$(_swm_pid "$pidf" "$bin"); then
        rm -f "$pidf"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        _swm_log "$name (pid $pid) ignored TERM for 10 s, killing"
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pidf"
    _swm_log "$name stopped (pid $pid)"
}

monitoring_down() {
    _swm_env
    _swm_stop prometheus "${_SWM_PROMETHEUS:-prometheus}"
    _swm_stop alertmanager "${_SWM_ALERTMANAGER:-alertmanager}"
}

monitoring_status() {
    _swm_env
    local rc=0 name bin port pid
    for name in prometheus alertmanager; do
        if [[ $name == prometheus ]]; then
            bin=${_SWM_PROMETHEUS:-prometheus} port=$_SWM_PROM_PORT
        else
            bin=${_SWM_ALERTMANAGER:-alertmanager} port=$_SWM_AM_PORT
        fi
        if pid=$(_swm_pid "$_SWM_DIR/$name.pid" "$bin"); then
            if _swm_ready "$port"; then
                printf '%-13s ready    pid %-7s http://127.0.0.1:%s/\n' "$name" "$pid" "$port"
            else
                printf '%-13s starting pid %-7s http://127.0.0.1:%s/ (not ready)\n' "$name" "$pid" "$port"
                rc=1
            fi
        else
            printf '%-13s stopped\n' "$name"
            rc=1
        fi
    done
    return $rc
}
