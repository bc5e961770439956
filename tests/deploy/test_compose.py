"""compose.yaml against the Compose specification, and against the CLI and Settings it names."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from agent.cli import build_parser
from settings import Settings
from tests.topology import COMPOSE, ENV_EXAMPLE, ROOT, load_compose, option
from workers.app import QUEUES

SERVICES = load_compose()["services"]
LIFELONG_SERVICES = sorted(name for name, service in SERVICES.items() if "build" in service)
WORKERS = sorted(name for name in LIFELONG_SERVICES if SERVICES[name]["command"][1] == "worker")


def validate(path: Path) -> subprocess.CompletedProcess:
    """check-jsonschema's own CLI with the Compose spec schema it ships (vendor.compose-spec)."""
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           str(path)], capture_output=True, text=True, timeout=60)


def test_compose_file_follows_the_compose_specification(tmp_path):
    result = validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    # The schema really is applied: a misspelt service key and a made-up depends_on condition fail it.
    broken = load_compose()
    broken["services"]["api"]["comand"] = broken["services"]["api"].pop("command")
    broken["services"]["learn-worker"]["depends_on"]["migrate"]["condition"] = "service_finished"
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    result = validate(tmp_path / "compose.yaml")
    assert result.returncode != 0 and "comand" in result.stdout + result.stderr


def parse(command: list[str]) -> argparse.Namespace:
    assert command[0] == "lifelong", command
    parser = build_parser()
    if command[1] not in parser._subparsers._group_actions[0].choices:  # argparse has no API for it
        pytest.skip(f"`lifelong {command[1]}` is not in the CLI yet; compose.yaml assumes {command}")
    try:
        return parser.parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"compose.yaml runs `{' '.join(command)}`, which the CLI rejects (see its usage above)")


@pytest.mark.parametrize("name", LIFELONG_SERVICES)
def test_commands_are_real_subcommands_and_flags(name):
    args = parse(SERVICES[name]["command"])
    if args.command == "worker":
        assert set(args.queues.split(",")) <= set(QUEUES)


def test_the_api_leaves_learning_and_migrations_to_their_services():
    args = parse(SERVICES["api"]["command"])
    assert args.no_worker and args.no_migrate, vars(args)


def test_workers_cover_every_queue_and_their_health_checks_ping_their_own_node():
    default_workers = [name for name in WORKERS if "profiles" not in SERVICES[name]]
    covered = {queue for name in default_workers for queue in option(SERVICES[name]["command"], "--queues").split(",")}
    assert covered == set(QUEUES)
    for name in WORKERS:
        node = option(SERVICES[name]["command"], "--hostname").split("@")[0]
        assert f"--destination {node}@$$HOSTNAME" in SERVICES[name]["healthcheck"]["test"][-1]


def test_migrations_run_before_the_api_and_the_workers():
    assert SERVICES["migrate"]["command"] == ["lifelong", "migrate"]
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in set(LIFELONG_SERVICES) - {"migrate"}:
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def lifelong_variables(names) -> set[str]:
    return {name for name in names if name.startswith("LIFELONG_")}


def test_environment_names_real_settings_and_env_example_documents_them_all():
    fields = {f"LIFELONG_{name.upper()}" for name in Settings.model_fields}
    in_compose = lifelong_variables(key for service in SERVICES.values() for key in service.get("environment", {}))
    # Every LIFELONG_ line of .env.example, set or commented out (a default shown).
    documented = lifelong_variables(re.findall(r"^#?\s*(LIFELONG_\w+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert in_compose <= fields, f"compose.yaml sets variables Settings does not read: {in_compose - fields}"
    assert documented <= fields, f".env.example documents variables Settings does not read: {documented - fields}"
    assert documented == fields, f".env.example misses settings: {fields - documented}"
    # ${...} in compose.yaml come from .env: each one has a line in .env.example.
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert used <= set(re.findall(r"^#?\s*(\w+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))


def test_gpu_profile_builds_the_gpu_extra():
    gpu = [name for name in LIFELONG_SERVICES if "gpu" in SERVICES[name].get("profiles", [])]
    assert gpu, "compose.yaml has no gpu profile"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG EXTRAS" in dockerfile and '".[${EXTRAS}]"' in dockerfile
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name in gpu:
        assert SERVICES[name]["build"]["args"]["EXTRAS"] in extras
        assert SERVICES[name]["environment"]["LIFELONG_DEVICE"] == "cuda"
    # Everything else builds the CPU image.
    assert all(SERVICES[name]["build"]["args"]["EXTRAS"] == "" for name in set(LIFELONG_SERVICES) - set(gpu))
