"""Config checks that speak to the person who wrote the YAML.

Runs before Snakemake's own schema validation (which fills the defaults): YAML dates become
ISO strings, unknown keys are named with the closest valid key, intervals are checked
against Binance's list, and any other schema violation is reported as one line naming the
key — never as a dump of the schema.
"""

from __future__ import annotations

import datetime as dt
import difflib
from pathlib import Path

import jsonschema
import yaml

from crypto_lakehouse.intervals import check_base_interval, check_binance_interval
from crypto_lakehouse.plan import ConfigError, parse_config_date

DATE_KEYS = ("start_date", "end_date")


def load_schema(path: str | Path) -> dict:
    # libyaml's loader when present: the schema is read at every Snakemake start (0.05 s in
    # pure Python, 0.01 s in C); same safe constructors.
    with open(path) as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def normalise_dates(config: dict) -> None:
    """YAML reads an unquoted ``2025-01-20`` as a date: store it as its ISO string (in place),
    the form every job parameter and the schema use."""
    for key in DATE_KEYS:
        value = config.get(key)
        if isinstance(value, dt.date):  # datetime too (a subclass)
            config[key] = parse_config_date(key, value).isoformat()


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if ref and ref.startswith("#/"):
        node = root
        for part in ref[2:].split("/"):
            node = node[part]
        return {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _key_name(path: list) -> str:
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "(top level)"


def unknown_keys(config, schema: dict, root: dict | None = None, path=None) -> list[str]:
    """One message per key the schema does not define, with the closest defined key."""
    root = schema if root is None else root
    path = path or []
    schema = _resolve(schema, root)
    messages: list[str] = []
    if isinstance(config, dict):
        props = schema.get("properties", {})
        for key, value in config.items():
            if key in props:
                messages += unknown_keys(value, props[key], root, [*path, key])
            elif schema.get("additionalProperties") is False and props:
                close = difflib.get_close_matches(str(key), list(props), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else "valid keys: " + ", ".join(props)
                messages.append(f"unknown config key {_key_name([*path, key])!r}: {hint}")
    elif isinstance(config, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(config):
            messages += unknown_keys(item, schema["items"], root, [*path, i])
    return messages


def interval_errors(config: dict) -> list[str]:
    errors = []
    if "interval" in config:
        errors.append(check_base_interval(config["interval"]))
    targets = (config.get("resample") or {}).get("targets") or []
    if isinstance(targets, list):
        for i, target in enumerate(targets):
            if isinstance(target, dict) and "interval" in target:
                key = f"resample.targets[{i}].interval"
                errors.append(check_binance_interval(key, target["interval"]))
    return [e for e in errors if e]


def schema_errors(config: dict, schema: dict) -> list[str]:
    """Every other violation, one line each: the key and jsonschema's short message."""
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        out.append(f"config key {_key_name(list(error.absolute_path))!r}: {_message(error)}")
    return out


def _message(error: jsonschema.ValidationError) -> str:
    """jsonschema's message; for a value that fits none of several forms (``oneOf``,
    ``anyOf``: "is not valid under any of the given schemas") what each form objected to,
    and the first sentence of the key's description, instead of that bare verdict."""
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return error.message
    objections: list[str] = []
    for sub in error.context:
        where = list(sub.relative_path)
        text = f"item {_key_name(where)}: {sub.message}" if where else sub.message
        if text not in objections:
            objections.append(text)
    message = f"{error.instance!r} fits none of the allowed forms ({'; or '.join(objections)})"
    description = " ".join(str(error.schema.get("description", "")).split())
    if description:
        message += f". Expected: {description.split('. ')[0].rstrip('.')}."
    return message


def check_user_config(config: dict, schema_path: str | Path) -> None:
    """Raise ConfigError with one line per problem (dates normalised in place first)."""
    normalise_dates(config)
    schema = load_schema(schema_path)
    problems = unknown_keys(config, schema) + interval_errors(config)
    if not problems:
        problems = schema_errors(config, schema)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
