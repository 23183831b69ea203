"""The configuration reference is generated from the Settings Structs: docs/configuration.md and
config/metrics-proxy.toml must say what the code says, and every option they name must work under
that name (file, environment, flag)."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import msgspec
import pytest

from proxy.cli import build_parser
from proxy.commands import reference
from proxy.commands.check import check_config
from proxy.config import Settings, flag_options, load_settings, tables

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"
SAMPLE = ROOT / "config" / "metrics-proxy.toml"
REGENERATE = ("regenerate: .venv/bin/metrics-proxy reference --update docs/configuration.md && "
              ".venv/bin/metrics-proxy reference --toml > config/metrics-proxy.toml")


def test_the_configuration_reference_is_what_the_code_generates():
    assert reference.generated_part(DOC.read_text()) == reference.markdown(build_parser()), REGENERATE


def test_the_sample_config_is_what_the_code_generates():
    assert SAMPLE.read_text() == reference.toml_sample(), REGENERATE


def test_the_sample_config_sets_every_option_to_its_default():
    assert load_settings(str(SAMPLE), environ={}) == Settings()
    assert check_config(str(SAMPLE), environ={}) == (0, [])


def all_options() -> list[reference.Option]:
    found = reference.options(Settings)
    for table, cls in tables().items():
        found += reference.options(cls, table)
    return found


def test_every_option_has_a_description_a_section_and_an_example_that_is_valid():
    for option in all_options():
        assert len(option.description) > 10, option.key
        if option.table is None and option.name not in tables():
            assert option.group in reference.GROUPS, option.key
        if option.example is not None:
            hint = typing.get_type_hints(Settings if option.table is None else tables()[option.table],
                                         include_extras=True)[option.name]
            msgspec.convert(option.example, hint)


PAIRED = {"launchdarkly.api_url": "METRICS_PROXY_LAUNCHDARKLY_API_TOKEN",
          "launchdarkly.api_token": "METRICS_PROXY_LAUNCHDARKLY_API_URL"}


def differs_from_default(option: reference.Option) -> tuple[str, typing.Any]:
    """A value for `option` that is not its default, as the environment spells it, and as parsed."""
    tp = option.type.types[0] if isinstance(option.type, msgspec.inspect.UnionType) else option.type
    if isinstance(tp, msgspec.inspect.LiteralType):
        value = next(v for v in tp.values if v != option.default)
        return value, value
    if isinstance(tp, msgspec.inspect.BoolType):
        return ("false", False) if option.default else ("true", True)
    if isinstance(tp, msgspec.inspect.IntType):
        value = (tp.ge or 0) + 1 if option.default != (tp.ge or 0) + 1 else (tp.ge or 0) + 2
        return str(value), value
    if isinstance(tp, msgspec.inspect.FloatType):
        return "7.5", 7.5
    if isinstance(tp, msgspec.inspect.ListType):
        return "a:b.c,d:e.f", ["a:b.c", "d:e.f"]
    if isinstance(tp, msgspec.inspect.DictType):
        if isinstance(tp.value_type, msgspec.inspect.StructType):  # tables by name, given as JSON
            return '{"x": {}}', {"x": tp.value_type.cls()}
        return "x=1,y=2", {"x": "1", "y": "2"}
    return "http://other.example/api", "http://other.example/api"


@pytest.mark.parametrize("option", [o for o in all_options() if not (o.table is None and o.name in tables())],
                         ids=lambda o: o.key)
def test_every_documented_environment_variable_sets_its_option(option):
    # a table's required options (upstream.url) must be set for the table to be valid
    environ = {o.env: "http://upstream.example/api" for o in all_options()
               if o.table is not None and o.table == option.table and o.default is msgspec.NODEFAULT}
    if option.table == "launchdarkly" and option.name in ("api_url", "api_token"):  # the two go together
        environ.update({"METRICS_PROXY_LAUNCHDARKLY_API_URL": "http://ld.example",
                        "METRICS_PROXY_LAUNCHDARKLY_API_TOKEN": "api-token"})
    raw, value = differs_from_default(option)
    environ[option.env] = raw
    if option.key in PAIRED:  # options valid only together
        environ.setdefault(PAIRED[option.key], "http://other.example/api")
    settings = load_settings(environ=environ)
    holder = settings if option.table is None else getattr(settings, option.table)
    assert getattr(holder, option.name) == value


def test_the_flags_the_reference_names_are_the_flags_serve_takes():
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    serve_flags = {a.dest for a in sub.choices["serve"]._actions if a.option_strings}
    assert set(flag_options()) <= serve_flags
    assert serve_flags - set(flag_options()) == {"help", "config", "worker_index"}


def test_check_config_names_every_bad_option_on_a_line_of_its_own(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text('port = 70000\nprot = 1\nauth = "maybe"\n[upstream]\nflush_interval = -1\n')
    status, problems = check_config(str(path), environ={"METRICS_PROXY_WORKERS": "0"})
    assert status == 1
    assert sorted(p.split(":")[0] for p in problems) == sorted([
        "invalid option port", "unknown option prot", "invalid option auth",
        "invalid option upstream.flush_interval", "missing option upstream.url", "invalid option workers",
    ]), problems


def test_check_config_command_exit_status(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('port = 4000\n[upstream]\nurl = "https://unleash.example/api"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('port = "many"\nmax_body_size = 10\n')
    env = {"PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "proxy", "check-config"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True, env=env, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    failed = subprocess.run([*run, str(bad)], capture_output=True, text=True, env=env, cwd=ROOT)
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 2 and "option port" in lines[0] and "option max_body_size" in lines[1], lines
    missing = subprocess.run([*run, str(tmp_path / "none.toml")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
