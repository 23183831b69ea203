"""`metrics-proxy check-config FILE`: validate a configuration file (and the METRICS_PROXY_*
environment) without starting; every problem on a line of its own, naming the option."""

from __future__ import annotations

import os
import typing
from typing import Any

import msgspec

from proxy.config import (
    ENV_PREFIX,
    ConfigError,
    Settings,
    load_settings,
    merge_options,
    options_from_env,
    options_from_file,
)


def _struct_of(tp: Any) -> type[msgspec.Struct] | None:
    """The Struct behind a table option's annotation (`Annotated[X | None, ...]`)."""
    for arg in typing.get_args(tp) or (tp,):
        if isinstance(arg, type) and issubclass(arg, msgspec.Struct):
            return arg
        found = _struct_of(arg) if typing.get_args(arg) else None
        if found is not None:
            return found
    return None


def option_problems(values: dict[str, Any], struct: type[msgspec.Struct] = Settings, prefix: str = "") -> list[str]:
    """Each option checked on its own against its type and constraints, so that one bad option
    does not hide the next."""
    hints = typing.get_type_hints(struct, include_extras=True)
    info = {f.name: f for f in msgspec.inspect.type_info(struct).fields}
    found = []
    for name, value in values.items():
        where = prefix + name
        if name not in info:
            found.append(f"unknown option {where}")
            continue
        table = _struct_of(hints[name])
        if table is not None and isinstance(value, dict):
            found += option_problems(value, table, where + ".")
            continue
        try:
            msgspec.convert(value, hints[name], strict=False)
        except msgspec.ValidationError as exc:
            found.append(f"invalid option {where}: {str(exc).split(' - at ')[0]}")
    found += [f"missing option {prefix}{f.name}" for f in info.values() if f.required and f.name not in values]
    return found


def problems(config_file: str | None, environ: dict[str, str]) -> list[str]:
    """What is wrong with `config_file` merged with the environment, one line per problem."""
    options: dict[str, Any] = {}
    try:
        if config_file:
            options = options_from_file(config_file)
        options = merge_options(options, options_from_env(environ))
    except ConfigError as exc:
        return [str(exc)]
    found = option_problems(options)
    if not found:
        try:
            load_settings(config_file, environ=environ)
        except ConfigError as exc:
            found.append(str(exc))
    return found


def check_config(config_file: str, environ: dict[str, str] | None = None) -> tuple[int, list[str]]:
    environ = dict(os.environ) if environ is None else environ
    environ.pop(ENV_PREFIX + "CONFIG", None)  # the file named on the command line is the one checked
    found = problems(config_file, environ)
    return (1 if found else 0), found
