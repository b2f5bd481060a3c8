"""The deployment files, rendered and checked offline: compose.yaml forwards every setting to
every Keel service, the image's build inputs are lean and safe, and the Kubernetes base (and its
CronJob overlay) renders, validates against the Kubernetes schemas and sets only real settings.

Run by tests/run.sh (pytest in a virtualenv with PyYAML and kubernetes-validate); needs
Debian's docker-compose, kubectl, and the debug build of the binaries (target/debug)."""

import fnmatch
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
KUBERNETES_VERSION = "1.30.0"

PROVIDER = re.compile(r"^OIDC_[A-Z0-9]+_(ISSUER|CLIENT_ID|CLIENT_SECRET|SCOPES|RESPONSE_MODE)$")
KEEL_SERVICES = ["migrate", "server", "worker", "mail-worker", "scheduler"]

# What compose.yaml itself decides for every Keel service (the stack's own addresses and the
# one-shot migration), whatever .env says; and per service, where each process listens.
STACK_DECIDES = {"DATABASE_URL", "REDIS_URL", "RABBITMQ_URL", "ENABLE_REDIS", "ENABLE_RABBITMQ",
                 "AUTO_MIGRATE"}
LISTENS = {
    "server": {"HOST", "PORT"},
    "worker": {"WORKER_METRICS_ADDR"},
    "mail-worker": {"WORKER_METRICS_ADDR"},
    "scheduler": {"SCHEDULER_HEALTH_ADDR"},
    "migrate": set(),
}


def documented_settings():
    """Every setting .env.example documents (a provider's own OIDC_<NAME>_* lines aside)."""
    names = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^(?:# )?([A-Z][A-Z0-9_]*)=", line)
        if match and not PROVIDER.match(match.group(1)) and match.group(1) not in names:
            names.append(match.group(1))
    return names


def defaults():
    """The values .env.example writes out."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def is_setting(name):
    """A real Keel setting: documented, a provider's own, or either read from a file."""
    base = name[: -len("_FILE")] if name.endswith("_FILE") else name
    return base in documented_settings() or bool(PROVIDER.match(base))


def seconds(span):
    match = re.fullmatch(r"(\d+)(s|m)", str(span))
    assert match, f"a duration like 45s: {span!r}"
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_the_catalog_is_what_the_code_reads():
    names = documented_settings()
    assert len(names) > 90, names
    for name in ["SECRET_KEY", "SHUTDOWN_DRAIN_SECONDS", "SCHEMA_WAIT_SECONDS",
                 "SCHEDULER_TIMEZONE", "RATE_LIMIT_LOGIN", "COOKIE_SECURE"]:
        assert name in names


# --- compose ---------------------------------------------------------------------------------

def compose_source():
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def render_compose(tmp_path, env_file_lines):
    """`docker-compose config` over compose.yaml in a project folder with the given .env (None:
    no .env). Debian's docker-compose 1.29 does not know env_file's `required:`, so the copy it
    reads lists `.env` plainly when the file exists and not at all when it does not: what
    Compose v2 does with `required: false`."""
    source = compose_source()
    for name in KEEL_SERVICES:
        service = source["services"][name]
        entries = service.pop("env_file")
        assert entries == [{"path": ".env", "required": False}], entries
        if env_file_lines is not None:
            service["env_file"] = [".env"]
    for drop in [k for k in source if k.startswith("x-")]:
        del source[drop]
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(source, sort_keys=False))
    if env_file_lines is not None:
        (tmp_path / ".env").write_text("\n".join(env_file_lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not re.match(r"^[A-Z][A-Z0-9_]*$", k)
           or k in ("PATH", "HOME")}
    out = subprocess.run(["docker-compose", "-f", "compose.yaml", "config"], cwd=tmp_path,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def marker(name):
    return f"marker-{name.lower().replace('_', '-')}"


def test_every_setting_reaches_every_keel_service(tmp_path):
    names = documented_settings() + ["OIDC_CORP_ISSUER", "OIDC_CORP_CLIENT_SECRET"]
    rendered = render_compose(tmp_path, [f"{n}={marker(n)}" for n in names])
    for service in KEEL_SERVICES:
        environment = rendered["services"][service]["environment"]
        for name in names:
            decided = name in STACK_DECIDES or name in LISTENS[service]
            if decided:
                assert environment.get(name) != marker(name), f"{service}: {name}"
            else:
                assert environment.get(name) == marker(name), \
                    f"{name} set in .env does not reach the {service} container"
    server = rendered["services"]["server"]["environment"]
    assert server["DATABASE_URL"].startswith("postgres://")
    assert "@postgres:5432/" in server["DATABASE_URL"]
    assert (server["HOST"], str(server["PORT"])) == ("0.0.0.0", "8000")
    assert server["AUTO_MIGRATE"] == "false"


def test_without_a_dot_env_the_stack_runs_on_its_own_defaults(tmp_path):
    rendered = render_compose(tmp_path, None)
    server = rendered["services"]["server"]["environment"]
    assert server["SMTP_HOST"] == "mail" and str(server["SMTP_PORT"]) == "1025"
    assert server["ENABLE_RABBITMQ"] == "true" and server["REDIS_URL"].startswith("redis://redis")
    worker = rendered["services"]["mail-worker"]["environment"]
    assert worker["WORKER_METRICS_ADDR"] == "0.0.0.0:9091"
    assert str(worker["WORKER_CONCURRENCY_EMAIL"]) == "8"


def test_a_copied_env_example_keeps_mail_on_the_catcher(tmp_path):
    lines = [line for line in (ROOT / ".env.example").read_text().splitlines()]
    rendered = render_compose(tmp_path, lines)
    server = rendered["services"]["server"]["environment"]
    assert server["SMTP_HOST"] == "mail" and str(server["SMTP_PORT"]) == "1025"
    assert server["SMTP_TLS"] == "false"


def test_keel_services_build_probe_and_stop_gracefully():
    source = compose_source()
    values = defaults()
    grace = {
        "server": int(values["SHUTDOWN_DRAIN_SECONDS"]) + int(values["SHUTDOWN_TIMEOUT"]),
        "worker": int(values["WORKER_SHUTDOWN_TIMEOUT"]),
        "mail-worker": int(values["WORKER_SHUTDOWN_TIMEOUT"]),
        "scheduler": 0,
    }
    services = source["services"]
    for name in KEEL_SERVICES:
        service = services[name]
        assert service["build"] == ".", name
        assert service["image"].startswith("${KEEL_IMAGE:-keel"), name
        for dependency, how in service.get("depends_on", {}).items():
            expected = ("service_completed_successfully" if dependency == "migrate"
                        else "service_healthy" if "healthcheck" in services[dependency]
                        else "service_started")
            assert how["condition"] == expected, (name, dependency)
        if name == "migrate":
            continue
        binary = service["command"][0]
        assert service["healthcheck"]["test"] == ["CMD", binary, "healthcheck"], name
        assert seconds(service["stop_grace_period"]) > grace[name], name
    assert services["rabbitmq"]["image"].startswith("rabbitmq:4.")
    assert "curl" not in (ROOT / "compose.yaml").read_text()


def test_jaeger_runs_only_with_the_tracing_profile(tmp_path):
    """`--profile tracing` adds Jaeger, which takes OTLP/HTTP on 4318; the stack never needs it."""
    services = compose_source()["services"]
    jaeger = services["jaeger"]
    assert jaeger["profiles"] == ["tracing"]
    assert jaeger["image"].startswith("jaegertracing/all-in-one:")
    assert all("jaeger" not in s.get("depends_on", {}) for s in services.values())
    example = (ROOT / ".env.example").read_text()
    assert "# OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4318" in example


# --- the image ---------------------------------------------------------------------------------

def ignored(path, patterns):
    return any(fnmatch.fnmatch(path, p.rstrip("/")) or path.startswith(p.rstrip("/") + "/")
               for p in patterns)


def test_the_build_context_leaves_out_builds_secrets_and_databases():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in ["target/release/server", "target", ".env", "keel.db", "keel.db-wal", ".git/HEAD"]:
        assert ignored(path, patterns), path
    # What the build needs stays: .env.example is compiled into `admin config check`.
    for path in [".env.example", "Cargo.toml", "Cargo.lock", "src/lib.rs", "bin/server.rs",
                 "bin/admin/main.rs", "migration/src/lib.rs", "bench/jobs_load.rs"]:
        assert (ROOT / path).exists(), path
        assert not ignored(path, patterns), path


def test_the_dependency_layer_stubs_every_declared_target():
    """The image's dependency layer builds from the manifests alone; cargo refuses a manifest
    whose declared targets have no file, so each one (bins, benches, examples) is stubbed."""
    cargo = (ROOT / "Cargo.toml").read_text()
    declared = re.findall(r'^path = "([^"]+)"', cargo, re.M)
    declared += [f"examples/{name}.rs" for name in
                 re.findall(r'^\[\[example\]\]\nname = "([^"]+)"', cargo, re.M)]
    assert "bin/server.rs" in declared and "examples/jobs.rs" in declared, declared
    dockerfile = (ROOT / "Dockerfile").read_text()
    layer = dockerfile.split("COPY Cargo.toml Cargo.lock")[1].split("COPY . .")[0]
    for path in declared:
        if path.startswith("src/"):
            continue
        assert (ROOT / path).exists(), path
        assert path in layer, f"the Dockerfile's dependency layer does not stub {path}"


def test_the_image_is_lean_and_runs_as_a_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    runtime = dockerfile.split("\nFROM ")[-1]
    assert "curl" not in runtime
    user = re.search(r"^USER (\S+)", runtime, re.M)
    assert user and user.group(1).split(":")[0] not in ("root", "0")
    cargo = (ROOT / "Cargo.toml").read_text()
    release = cargo.split("[profile.release]")[1].split("\n[")[0]
    assert re.search(r'^strip = true', release, re.M)
    assert re.search(r'^lto = "thin"', release, re.M)


# --- Kubernetes --------------------------------------------------------------------------------

def kustomize(folder):
    out = subprocess.run([KUBECTL, "kustomize", str(ROOT / "deploy/kubernetes" / folder)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_specs(objects):
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield o["metadata"]["name"], o["spec"]["jobTemplate"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("folder", ["base", "scheduler-cronjobs"])
def test_the_manifests_render_and_validate(folder):
    objects = kustomize(folder)
    for o in objects:
        kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
    kinds = sorted({o["kind"] for o in objects})
    assert {"ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Service"} <= set(kinds)


def test_the_base_runs_every_process_safely():
    objects = kustomize("base")
    deployments = by_kind(objects, "Deployment")
    assert set(deployments) == {"keel-server", "keel-worker", "keel-mail-worker", "keel-scheduler"}
    config = next(iter(by_kind(objects, "ConfigMap").values()))["data"]
    grace = {
        "keel-server": int(config["SHUTDOWN_DRAIN_SECONDS"]) + int(config["SHUTDOWN_TIMEOUT"]),
        "keel-worker": int(config["WORKER_SHUTDOWN_TIMEOUT"]),
        "keel-mail-worker": int(config["WORKER_SHUTDOWN_TIMEOUT"]),
        "keel-scheduler": 0,
    }
    for name, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] > grace[name], name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in spec["containers"]:
            for probe in ["startupProbe", "readinessProbe", "livenessProbe"]:
                assert probe in container, (name, probe)
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert "memory" in container["resources"]["limits"], name
            assert "cpu" in container["resources"]["requests"], name
    server = deployments["keel-server"]["spec"]["template"]["spec"]["containers"][0]
    assert server["readinessProbe"]["httpGet"]["path"] == "/system/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/system/health/live"
    worker = deployments["keel-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert set(by_kind(objects, "PodDisruptionBudget")) == {"keel-server", "keel-worker"}
    assert by_kind(objects, "Job")["keel-migrate"]["spec"]["template"]["spec"]["containers"][0][
        "args"] == ["admin", "migrate"]
    assert "keel-server" in by_kind(objects, "Service")
    # The server's metrics are scraped from a port of their own that the Service leaves out.
    env = {e["name"]: e.get("value") for e in server["env"]}
    metrics_port = int(env["METRICS_ADDR"].rsplit(":", 1)[1])
    annotations = deployments["keel-server"]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == metrics_port
    assert metrics_port in [p["containerPort"] for p in server["ports"]]
    service_ports = by_kind(objects, "Service")["keel-server"]["spec"]["ports"]
    assert all(p["targetPort"] not in (metrics_port, "metrics") for p in service_ports)


def test_secrets_are_files_read_through_their_file_settings():
    for name, spec in pod_specs(kustomize("base")):
        container = spec["containers"][0]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        secret_volumes = [v["name"] for v in spec["volumes"] if "secret" in v]
        assert secret_volumes, name
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert "SECRET_KEY" not in env and "DATABASE_URL" not in env, name
        for setting in ["SECRET_KEY_FILE", "DATABASE_URL_FILE"]:
            assert env[setting].startswith(mounts[secret_volumes[0]] + "/"), (name, setting)


@pytest.mark.parametrize("folder", ["base", "scheduler-cronjobs"])
def test_every_variable_the_manifests_set_is_a_real_setting(folder, tmp_path):
    objects = kustomize(folder)
    config = next(iter(by_kind(objects, "ConfigMap").values()))["data"]
    for name in config:
        assert is_setting(name), f"the ConfigMap sets {name}, which Keel does not read"
    for workload, spec in pod_specs(objects):
        env = {}
        for container in spec["containers"]:
            for entry in container.get("env", []):
                assert is_setting(entry["name"]), f"{workload} sets {entry['name']}"
                env[entry["name"]] = entry["value"]
        # And Keel accepts them: `admin config check` over the ConfigMap and the pod's own
        # settings, its secret files made up here.
        check_env = {"PATH": os.environ.get("PATH", "")}
        check_env.update(config)
        for key, value in env.items():
            if key.endswith("_FILE"):
                secret = tmp_path / Path(value).name
                secret.write_text({
                    "secret_key": "a-secret-key-of-at-least-32-bytes-0000",
                    "database_url": "postgres://keel:pw@postgres:5432/keel",
                    "redis_url": "redis://redis:6379/0",
                    "rabbitmq_url": "amqp://keel:pw@rabbitmq:5672/%2f",
                }.get(secret.name, "x") + "\n")
                value = str(secret)
            check_env[key] = value
        out = subprocess.run([str(TARGET / "admin"), "config", "check"], env=check_env,
                             cwd=tmp_path, capture_output=True, text=True)
        assert out.returncode == 0, f"{workload}: {out.stderr}"


def test_the_cronjob_form_enqueues_each_periodic_job():
    listed = subprocess.run([str(TARGET / "scheduler"), "--list"], capture_output=True,
                            text=True, cwd="/", env={"PATH": os.environ.get("PATH", "")})
    assert listed.returncode == 0, listed.stderr
    jobs = {line.split(":")[0] for line in listed.stdout.splitlines() if not line.startswith(" ")}
    assert len(jobs) >= 4, listed.stdout
    objects = kustomize("scheduler-cronjobs")
    assert "keel-scheduler" not in by_kind(objects, "Deployment")
    cronjobs = by_kind(objects, "CronJob")
    fired = set()
    for name, cronjob in cronjobs.items():
        container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][:2] == ["scheduler", "--once"], name
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid", name
        assert len(cronjob["spec"]["schedule"].split()) == 5, name
        fired.add(container["args"][2])
    assert fired == jobs
