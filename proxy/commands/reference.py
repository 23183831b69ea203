"""The configuration reference, generated from the Settings Structs (proxy/config.py).

`markdown(parser)` is the generated part of docs/configuration.md (between its BEGIN/END markers),
`toml_sample()` is config/metrics-proxy.toml. Both come from each field's own metadata: name, type,
default, description, example, section. A nested table of Settings (`[upstream]`, and any table
added later) becomes a section of its own, its options named `METRICS_PROXY_<TABLE>_<OPTION>`.
`metrics-proxy reference` prints either; tests/test_config_reference.py fails when the files in the
repository differ from what this module makes of the code.
"""

from __future__ import annotations

import argparse
import json
import re
import textwrap
from dataclasses import dataclass
from typing import Any

import msgspec

from proxy.config import ENV_PREFIX, GROUPS, Settings, tables

BEGIN = "<!-- BEGIN GENERATED: metrics-proxy reference --update docs/configuration.md -->"
END = "<!-- END GENERATED -->"
_LINK = re.compile(r"\[([^\]]+)\]\(([^)#]+)(#[^)]*)?\)")
_SIZE_NAMES = ("size", "bytes")


@dataclass(frozen=True)
class Option:
    table: str | None  # None: top level
    name: str
    type: Any  # msgspec.inspect type, metadata unwrapped
    default: Any  # msgspec.NODEFAULT when required
    description: str
    example: Any
    group: str | None
    flag: bool

    @property
    def key(self) -> str:
        return self.name if self.table is None else f"{self.table}.{self.name}"

    @property
    def env(self) -> str:
        return ENV_PREFIX + (self.name if self.table is None else f"{self.table}_{self.name}").upper()

    @property
    def cli_flag(self) -> str:
        return "--" + self.name.replace("_", "-") if self.flag else ""


def options(struct: type[msgspec.Struct], table: str | None = None) -> list[Option]:
    found = []
    for f in msgspec.inspect.type_info(struct).fields:
        meta = f.type if isinstance(f.type, msgspec.inspect.Metadata) else None
        schema = (meta.extra_json_schema or {}) if meta else {}
        extra = (meta.extra or {}) if meta else {}
        if not schema.get("description"):
            raise ValueError(f"option {f.name} of {struct.__name__} has no description: give it option(...)")
        default = f.default if f.default_factory is msgspec.NODEFAULT else f.default_factory()
        examples = schema.get("examples") or [None]
        found.append(Option(table, f.name, meta.type, default, schema["description"], examples[0],
                            extra.get("group"), bool(extra.get("flag"))))
    return found


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        pairs = (f"{k if re.fullmatch(r'[A-Za-z0-9_-]+', k) else json.dumps(k)} = {_toml_value(v)}"
                 for k, v in value.items())
        return "{ " + ", ".join(pairs) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def _default(option: Option) -> str:
    if option.default is msgspec.NODEFAULT:
        return "required"
    if option.default is None:
        return "unset"
    text = f"`{_toml_value(option.default)}`"
    if isinstance(option.default, int) and option.name.endswith(_SIZE_NAMES) and option.default >= 1024:
        for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if option.default % size == 0:
                return f"{text} ({option.default // size} {unit})"
    return text


def _bounds(tp: Any) -> str:
    low = (f"> {tp.gt:g}" if tp.gt is not None else f">= {tp.ge:g}" if tp.ge is not None else "")
    high = (f"< {tp.lt:g}" if tp.lt is not None else f"<= {tp.le:g}" if tp.le is not None else "")
    if tp.ge is not None and tp.le is not None:
        return f" {tp.ge:g}-{tp.le:g}"
    return " " + ", ".join(filter(None, (low, high))) if low or high else ""


def type_name(tp: Any) -> str:
    inspect = msgspec.inspect
    if isinstance(tp, inspect.Metadata):
        return type_name(tp.type)
    if isinstance(tp, inspect.BoolType):
        return "boolean"
    if isinstance(tp, inspect.StrType):
        return "string"
    if isinstance(tp, inspect.IntType):
        return "integer" + _bounds(tp)
    if isinstance(tp, inspect.FloatType):
        return "number" + _bounds(tp)
    if isinstance(tp, inspect.LiteralType):
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in tp.values)
    if isinstance(tp, inspect.ListType):
        return f"list of {type_name(tp.item_type)}s"
    if isinstance(tp, inspect.DictType):
        return f"table of {type_name(tp.value_type)}s"
    if isinstance(tp, inspect.StructType):
        return "table"
    if isinstance(tp, inspect.UnionType):
        named = [type_name(t) for t in tp.types if not isinstance(t, inspect.NoneType)]
        return " or ".join(named) + (" (optional)" if len(named) < len(tp.types) else "")
    raise TypeError(f"no name for the type {tp!r}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(rows: list[Option], with_flags: bool) -> list[str]:
    head = ["option", "env", *(["flag"] if with_flags else []), "type", "default", "meaning"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for o in rows:
        cells = [f"`{o.name}`", f"`{o.env}`", *([f"`{o.cli_flag}`" if o.flag else ""] if with_flags else []),
                 type_name(o.type), _default(o), o.description]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _top_level() -> tuple[dict[str, list[Option]], list[Option]]:
    """Top-level options by group, and the table-valued ones."""
    nested = tables()
    groups: dict[str, list[Option]] = {name: [] for name in GROUPS}
    table_options = []
    for o in options(Settings):
        if o.name in nested:
            table_options.append(o)
        elif o.group in groups:
            groups[o.group].append(o)
        else:
            raise ValueError(f"option {o.name} has no group: give it option(..., group=...) with a key of GROUPS")
    return groups, table_options


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    lines = ["| command | what | flags |", "|---|---|---|"]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name, command in sub.choices.items():
        flags = [a.option_strings[-1] for a in command._actions
                 if a.option_strings and a.help is not argparse.SUPPRESS and a.dest != "help"]
        positionals = [a.metavar or a.dest.upper() for a in command._actions
                       if not a.option_strings and a.help is not argparse.SUPPRESS]
        usage = " ".join([f"`metrics-proxy {name}`", *(f"`{p}`" for p in positionals)])
        lines.append(f"| {usage} | {_cell(helps.get(name) or '')} | {', '.join(f'`{f}`' for f in flags)} |")
    lines.append("| `metrics-proxy --version`, `metrics-proxy --help` | | |")
    return lines


def markdown(parser: argparse.ArgumentParser) -> str:
    """The generated part of docs/configuration.md: every option, and every command's flags."""
    groups, table_options = _top_level()
    lines = ["## Options", "", "Durations are seconds (decimals allowed); sizes are bytes.", ""]
    for key, (title, note) in GROUPS.items():
        if not groups[key]:
            continue
        lines += [f"### {title}", "", *_table(groups[key], with_flags=True), ""]
        if note:
            lines += [note, ""]
    nested = tables()
    for o in table_options:
        cls = nested[o.name]
        lines += [f"### `[{o.name}]`", "", f"{o.description[0].upper()}{o.description[1:]}.", ""]
        lines += [*_table(options(cls, o.name), with_flags=False), ""]
        lines += [f"`[{o.name}]` options have no flags; setting any `{ENV_PREFIX}{o.name.upper()}_*` variable "
                  f"creates the table, so its required options must then be set too.", ""]
    lines += ["## Commands and their flags", "", *_commands(parser), ""]
    return "\n".join(lines)


def update_markdown(text: str, generated: str) -> str:
    """`text` (docs/configuration.md) with its generated part replaced by `generated`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError("the file has no BEGIN GENERATED / END GENERATED markers")
    return text[:start] + BEGIN + "\n\n" + generated + "\n" + text[end:]


def generated_part(text: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError("the file has no BEGIN GENERATED / END GENERATED markers")
    return text[start + len(BEGIN):end].strip("\n") + "\n"


# --- config/metrics-proxy.toml ---------------------------------------------------------------------

TOML_HEADER = """\
# metrics-proxy configuration: every option, with its default.
# Generated from proxy/config.py (`metrics-proxy reference --toml`): copy it, then edit the copy.
# Precedence: command-line flag > environment variable > this file > default.
# Environment names: METRICS_PROXY_<OPTION>, nested tables joined with "_"
# (e.g. METRICS_PROXY_UPSTREAM_URL). Lists in the environment are comma-separated;
# tables such as upstream.tokens are "key=value,key=value".
# Durations are seconds, sizes bytes. docs/configuration.md says the same with links."""


def _plain(text: str) -> str:
    """Markdown to a comment: links become `text (docs/target)`, code spans lose their backticks."""

    def link(m: re.Match) -> str:
        target = "docs/" + m.group(2) + (m.group(3) or "")
        return target if m.group(1) == m.group(2) else f"{m.group(1)} ({target})"

    return _LINK.sub(link, text).replace("`", "")


def _comment(text: str, prefix: str = "# ") -> list[str]:
    return [prefix + line for line in textwrap.wrap(_plain(text), 100 - len(prefix), break_long_words=False,
                                                    break_on_hyphens=False)]


def _setting(o: Option, commented: bool) -> list[str]:
    lines = _comment(o.description)
    mark = "# " if commented else ""
    if o.default is msgspec.NODEFAULT or o.default is None:
        lines.append(f"# {o.name} = {_toml_value(o.example)}" if o.example is not None else f"# {o.name} =")
    else:
        if o.example is not None and o.example != o.default:
            lines.append(f"# e.g. {o.name} = {_toml_value(o.example)}")
        lines.append(f"{mark}{o.name} = {_toml_value(o.default)}")
    return lines


def toml_sample() -> str:
    groups, table_options = _top_level()
    lines = [TOML_HEADER]
    for key, (title, _note) in GROUPS.items():
        if not groups[key]:
            continue
        lines += ["", f"# --- {title} " + "-" * max(3, 93 - len(title)), ""]
        for o in groups[key]:
            lines += [*_setting(o, commented=False), ""]
        lines.pop()
    nested = tables()
    for o in table_options:
        lines += ["", f"# --- [{o.name}] " + "-" * max(3, 91 - len(o.name)), ""]
        lines += _comment(f"{o.description[0].upper()}{o.description[1:]}.")
        lines += [f"# [{o.name}]"]
        for sub in options(nested[o.name], o.name):
            lines += [*_setting(sub, commented=True)]
    return "\n".join(lines) + "\n"
