"""Options: flag > env > file > default; a bad option fails at start with one line naming it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from proxy.config import ConfigError, load_settings


def write(tmp_path, text: str):
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return str(path)


def test_defaults():
    s = load_settings(environ={})
    assert (s.host, s.port, s.data_dir, s.auth, s.max_body_size, s.synchronous) == (
        "127.0.0.1", 3063, "data", "tokens", 1048576, "FULL")
    assert s.upstream is None


def test_precedence_flag_over_env_over_file(tmp_path):
    path = write(tmp_path, 'port = 4000\nhost = "0.0.0.0"\ndata_dir = "from-file"\n')
    env = {"METRICS_PROXY_PORT": "5000", "METRICS_PROXY_DATA_DIR": "from-env"}
    s = load_settings(path, flags={"port": 6000}, environ=env)
    assert (s.port, s.data_dir, s.host) == (6000, "from-env", "0.0.0.0")
    s = load_settings(path, flags={"port": None}, environ=env)
    assert s.port == 5000


def test_the_example_config_file_loads():
    s = load_settings("config/metrics-proxy.toml", environ={})
    assert s == load_settings(environ={})  # every option at its default (tests/test_config_reference.py)


def test_env_lists_and_upstream_tables(tmp_path):
    env = {
        "METRICS_PROXY_CLIENT_TOKENS": "a:development.x, b:production.y",
        "METRICS_PROXY_UPSTREAM_URL": "http://unleash:4242/api",
        "METRICS_PROXY_UPSTREAM_TOKENS": "development=tok-d,production=tok-p",
        "METRICS_PROXY_UPSTREAM_FLUSH_INTERVAL": "2.5",
    }
    s = load_settings(environ=env)
    assert s.client_tokens == ["a:development.x", "b:production.y"]
    assert s.upstream.url == "http://unleash:4242/api"
    assert s.upstream.tokens == {"development": "tok-d", "production": "tok-p"}
    assert s.upstream.flush_interval == 2.5


def test_file_upstream_section(tmp_path):
    path = write(tmp_path, '[upstream]\nurl = "http://u:4242/api"\ntokens = { development = "t" }\n')
    s = load_settings(path, environ={})
    assert s.upstream.tokens == {"development": "t"} and s.upstream.flush_interval == 10


@pytest.mark.parametrize(
    "text, env, needle",
    [
        ("port = 99999\n", {}, "invalid option port"),
        ('port = "abc"\n', {}, "invalid option port"),
        ("", {"METRICS_PROXY_PORT": "abc"}, "invalid option port"),
        ('auth = "maybe"\n', {}, "invalid option auth"),
        ("prot = 1\n", {}, "unknown option prot"),
        ('[upstream]\nurl = "ftp://x"\n', {}, "invalid option upstream.url"),
        ('[upstream]\nurl = "http://x"\nflush_interval = -1\n', {}, "invalid option upstream.flush_interval"),
        ("port = [\n", {}, "not valid TOML"),
    ],
)
def test_bad_options_name_the_option(tmp_path, text, env, needle):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ=env)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_reports_a_bad_option_in_one_line_and_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--config", write(tmp_path, "port = 70000\n")],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid option port" in lines[0]


def test_cli_help_explains():
    out = subprocess.run([sys.executable, "-m", "proxy", "--help"], capture_output=True, text=True, timeout=30).stdout
    assert "METRICS_PROXY_" in out and "serve" in out
    out = subprocess.run([sys.executable, "-m", "proxy", "serve", "--help"], capture_output=True, text=True,
                         timeout=30).stdout
    for flag in ("--config", "--host", "--port", "--data-dir"):
        assert flag in out


def test_a_taken_port_is_one_clear_error_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "proxy", "serve", "--auth", "open", "--port", str(port),
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=30,
        )
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("setting", "loop_class"), [
    (None, "uvloop.Loop"),  # the default
    ("asyncio", "asyncio.unix_events._UnixSelectorEventLoop"),
])
def test_serve_runs_on_the_configured_event_loop(tmp_path, setting, loop_class):
    import urllib.request

    from tests.support import CLIENT_TOKEN, ProxyProcess

    env = {"METRICS_PROXY_EVENT_LOOP": setting} if setting else {}
    proxy = ProxyProcess(tmp_path / "data", extra_env=env).start()
    now_ms = int(time.time() * 1000)
    try:
        post = urllib.request.Request(
            proxy.url + "/api/client/metrics", method="POST",
            data=json.dumps({"appName": "a", "bucket": {"start": now_ms - 1000, "stop": now_ms,
                                                        "toggles": {"f": {"yes": 1}}}}).encode(),
            headers={"Authorization": CLIENT_TOKEN, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(post, timeout=10) as answer:
            assert answer.status == 202
    finally:
        proxy.terminate()
    assert f"event loop {loop_class}," in proxy.log_path.read_text()


def test_workers_from_file_env_and_flag_within_bounds(tmp_path):
    path = write(tmp_path, "workers = 3\n")
    assert load_settings(environ={}).workers == 1
    assert load_settings(path, environ={}).workers == 3
    assert load_settings(path, environ={"METRICS_PROXY_WORKERS": "2"}).workers == 2
    assert load_settings(path, flags={"workers": 4}, environ={"METRICS_PROXY_WORKERS": "2"}).workers == 4
    for bad in ("0", "17"):
        with pytest.raises(ConfigError, match="invalid option workers"):
            load_settings(environ={"METRICS_PROXY_WORKERS": bad})
    help_text = subprocess.run([sys.executable, "-m", "proxy", "serve", "--help"], capture_output=True, text=True).stdout
    assert "--workers" in help_text and "--worker-index" not in help_text
