"""deploy/compose/docker-compose.yml and the Dockerfile, checked without Docker (there is none
here, so compose is never run in CI): the files they mount and copy exist, every port and
variable is documented in deploy/README.md, the images are pinned, the Dockerfile installs what
pyproject.toml pins, and the Prometheus and Alertmanager configs pass promtool and amtool.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCS = (ROOT / "deploy" / "README.md").read_text()

INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(text: str) -> str:
    """${VAR:-default} -> default, as compose does with VAR unset ($$ is a literal $)."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", text.replace("$$", "\0")).replace(
        "\0", "$")


def services() -> dict[str, dict]:
    return load_compose()["services"]


def documented(name: str) -> bool:
    return re.search(rf"`{re.escape(name)}`|\b{re.escape(name)}\b", DOCS) is not None


# ------------------------------------------------------------------------------ compose

def test_the_compose_file_has_every_component_the_issue_names():
    s = services()
    assert {"kafka", "worker", "simulator", "prometheus", "alertmanager", "grafana",
            "mailpit"} <= set(s)
    assert s["simulator"]["profiles"] == ["demo"]
    assert "demo" not in s["worker"].get("profiles", [])
    assert s["kafka"]["image"].startswith("apache/kafka:")
    env = s["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_every_image_is_pinned_to_a_version():
    for name, svc in services().items():
        image = interpolate(svc["image"])
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: {image} is not pinned"


def test_the_worker_and_simulator_are_built_from_the_repositorys_dockerfile():
    for name in ("worker", "simulator"):
        build = services()[name]["build"]
        context = (COMPOSE_DIR / build["context"]).resolve()
        assert context == ROOT
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def _bind_mounts():
    for name, svc in services().items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if source.startswith((".", "/")):
                yield name, source, vol


def test_every_mounted_path_exists_in_the_repository():
    mounts = list(_bind_mounts())
    assert len(mounts) >= 8
    for name, source, vol in mounts:
        path = (COMPOSE_DIR / source).resolve()
        assert path.exists(), f"{name}: {vol}: {path} does not exist"
        assert ROOT in path.parents, f"{name}: {vol} points outside the repository"


def test_named_volumes_are_declared():
    declared = set(load_compose().get("volumes") or {})
    for name, svc in services().items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} not declared"


def test_every_published_port_is_on_loopback_and_documented():
    seen = 0
    for name, svc in services().items():
        for port in svc.get("ports", []):
            raw = port
            host_ip, host_port, _container = interpolate(port).split(":")
            assert host_ip == "127.0.0.1", f"{name}: {raw} is not bound to 127.0.0.1"
            assert re.search(rf"\|\s*{host_port}\s*\|\s*{name}\s*\|", DOCS), \
                f"{name}: host port {host_port} is not in deploy/README.md's port table"
            var = INTERPOLATION.search(raw)  # the host port's variable
            assert var and documented(var.group(1)), f"{name}: {raw}: variable undocumented"
            seen += 1
    assert seen == 6


def test_every_variable_the_compose_file_reads_or_sets_is_documented():
    text = COMPOSE.read_text()
    read = {m.group(1) for m in INTERPOLATION.finditer(text)}
    set_ = {k for svc in services().values() for k in (svc.get("environment") or {})}
    assert "SW_PARTITIONS" in read and "SETTLEWATCH_BOOTSTRAP" in set_
    undocumented = sorted(v for v in read | set_ if not documented(v))
    assert not undocumented, f"not in deploy/README.md: {undocumented}"


def test_grafana_gets_the_variables_its_provisioning_files_expand():
    provisioning = " ".join(p.read_text() for p in (ROOT / "grafana/provisioning").rglob("*.yaml"))
    wanted = set(re.findall(r"\$\{(SETTLEWATCH_[A-Z_]+)\}", provisioning))
    env = services()["grafana"]["environment"]
    assert wanted and wanted <= set(env)
    assert env["SETTLEWATCH_PROMETHEUS_URL"] == "http://prometheus:9090"
    mounts = dict(v.split(":")[:2][::-1] for v in services()["grafana"]["volumes"])
    assert mounts[env["SETTLEWATCH_DASHBOARDS_DIR"]] == "../../grafana/dashboards"


def test_the_worker_listens_where_prometheus_scrapes_it():
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    assert job["job_name"] == "settlewatch"  # what the alert rules select
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    worker = services()["worker"]
    assert host == "worker" and worker["environment"]["SETTLEWATCH_METRICS_PORT"] == port
    assert worker["environment"]["SETTLEWATCH_METRICS_ADDR"] == "0.0.0.0"
    (am,) = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == "alertmanager:9093"
    assert any(p.endswith(":9093") for p in services()["alertmanager"]["ports"])


def test_prometheus_config_passes_promtool_with_the_repositorys_rules(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by make setup (deploy/local/monitoring.sh)"
    text = (COMPOSE_DIR / "prometheus.yml").read_text().replace("/etc/prometheus/rules",
                                                                 str(ROOT / "alerts"))
    (tmp_path / "prometheus.yml").write_text(text)
    done = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout + done.stderr


def _render_alertmanager(out: Path) -> None:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(out)}  # none of the caller's SW_*
    done = subprocess.run([str(COMPOSE_DIR / "render-alertmanager"), str(out)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_committed_alertmanager_config_is_the_template_rendered_for_compose(tmp_path):
    _render_alertmanager(tmp_path / "am")
    for rel in ("alertmanager.yml", "templates/runbook_base.tmpl"):
        fresh = (tmp_path / "am" / rel).read_text()
        committed = (COMPOSE_DIR / "alertmanager" / rel).read_text()
        assert fresh == committed, f"deploy/compose/alertmanager/{rel} is stale: run " \
                                   f"deploy/compose/render-alertmanager and commit it"
    cfg = yaml.safe_load((COMPOSE_DIR / "alertmanager/alertmanager.yml").read_text())
    assert cfg["global"]["smtp_smarthost"] == "mailpit:1025"
    assert str(ROOT) not in (COMPOSE_DIR / "alertmanager/alertmanager.yml").read_text()


def test_the_alertmanager_config_passes_amtool(tmp_path):
    amtool = shutil.which("amtool")
    assert amtool, "amtool is installed by make setup (deploy/local/monitoring.sh)"
    text = (COMPOSE_DIR / "alertmanager/alertmanager.yml").read_text()
    text = text.replace("/etc/alertmanager/alerts", str(ROOT / "alerts")).replace(
        "/etc/alertmanager/rendered", str(COMPOSE_DIR / "alertmanager"))
    (tmp_path / "alertmanager.yml").write_text(text)
    done = subprocess.run([amtool, "check-config", str(tmp_path / "alertmanager.yml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 templates" in done.stdout  # both template globs match files


def test_the_alertmanager_mounts_match_the_paths_in_its_config():
    cfg = yaml.safe_load((COMPOSE_DIR / "alertmanager/alertmanager.yml").read_text())
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services()["alertmanager"]["volumes"]}
    for pattern in cfg["templates"]:
        inside = Path(pattern)
        target = next((t for t in mounts if inside.is_relative_to(t)), None)
        assert target, f"{pattern}: no volume mounted there"
        host = (COMPOSE_DIR / mounts[target] / inside.relative_to(target)).resolve()
        assert list(host.parent.glob(host.name)), f"{pattern}: {host} matches no file"


# ------------------------------------------------------------------------------ Dockerfile

def dockerfile_requirements() -> list[Requirement]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    reqs = []
    for line in text.splitlines():
        if line.startswith("RUN pip install") and "--no-deps" not in line:
            reqs += [Requirement(r) for r in re.findall(r'"([^"]+)"', line)]
    return reqs


def test_the_dockerfile_installs_exactly_pyprojects_dependencies_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {canonicalize_name(Requirement(r).name): Requirement(r)
              for r in project["dependencies"]}
    got = {canonicalize_name(r.name): r for r in dockerfile_requirements()}
    assert sorted(got) == sorted(wanted), "Dockerfile and pyproject.toml name other packages"
    for name, req in got.items():
        (spec,) = req.specifier  # one exact pin each
        assert spec.operator == "==", f"{name}: pin an exact version in the Dockerfile"
        assert wanted[name].specifier.contains(spec.version, prereleases=True), \
            f"{name}=={spec.version} is outside pyproject.toml's {wanted[name].specifier}"
        pyproject_pins = [s for s in wanted[name].specifier if s.operator == "=="]
        for pin in pyproject_pins:
            assert pin.version == spec.version, f"{name}: {spec} vs pyproject {pin}"


def test_the_dockerfile_pins_are_the_versions_the_tests_run_with():
    from importlib.metadata import version
    for req in dockerfile_requirements():
        (spec,) = req.specifier
        assert version(req.name) == spec.version, \
            f"{req.name}: Dockerfile {spec.version}, installed {version(req.name)}"


def test_the_dockerfile_is_multi_stage_non_root_and_copies_files_that_exist():
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    (user,) = re.findall(r"^USER (\S+)", text, re.M)
    assert not user.startswith(("root", "0"))
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        *sources, _dest = line.split()
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            assert not (ROOT / src).is_symlink(), f"COPY {src}: a symlink (copied as a link)"
            assert src not in ignored, f"COPY {src} but .dockerignore excludes it"
    assert "/healthz" in text and "HEALTHCHECK" in text
    assert re.search(r"^EXPOSE 9308$", text, re.M)


@pytest.mark.parametrize("mentioned", ["not run in CI"])
def test_deploy_readme_says_compose_is_not_run_in_ci(mentioned):
    assert mentioned in DOCS
