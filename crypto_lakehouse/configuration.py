"""Config checks that speak to the person who wrote the YAML.

Runs before Snakemake's own schema validation (which fills the defaults): YAML dates become
ISO strings, endpoint URLs lose a trailing slash, unknown keys are named with the closest
valid key, intervals are checked against Binance's list, endpoint URLs must be http(s)
URLs, a data_dir that looks like a URL must be ``s3://bucket[/prefix]`` (a run_dir: no URL
at all), an empty symbol list of a trade type in use is refused, and any other schema
violation is reported as one line naming the key — never as a dump of the schema. Every
problem is reported at once, each key once.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import re
from pathlib import Path

import jsonschema
import yaml

from crypto_lakehouse.intervals import (
    DAY_MS,
    check_base_interval,
    check_resample_interval,
    interval_ms,
)
from crypto_lakehouse.layout import TRADE_TYPES
from crypto_lakehouse.plan import ConfigError, config_error, parse_config_date

DATE_KEYS = ("start_date", "end_date")
DATE_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # the schema's


def load_schema(path: str | Path) -> dict:
    # libyaml's loader when present: the schema is read at every Snakemake start (0.05 s in
    # pure Python, 0.01 s in C); same safe constructors.
    with open(path) as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _date_problems(config: dict) -> list[tuple[str, str]]:
    """YAML reads an unquoted ``2025-01-20`` as a date: store it as its ISO string (in
    place), the form every job parameter and the schema use. A value that cannot be a UTC
    day (a time of day, 2025-02-30) is a (key, message) problem."""
    problems = []
    for key in DATE_KEYS:
        value = config.get(key)
        if not isinstance(value, (str, dt.date)):  # datetime too (a subclass)
            continue  # absent, null, or not a date at all: the schema says so
        if isinstance(value, str) and not DATE_PATTERN.fullmatch(value):
            continue  # another form (20250120, 2025-W03): the schema's pattern says so
        try:
            day = parse_config_date(key, value)
        except ConfigError as exc:
            problems.append((key, str(exc)))
            continue
        config[key] = day.isoformat()
    return problems


TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


def config_file_problem(path: str | Path) -> str | None:
    """Why a ``--configfile`` cannot be read as YAML, naming the file (and the line and
    key), or None. Snakemake reads it before the workflow's own checks: a missing file is a
    traceback there, a syntax error names neither file nor line, and an unquoted date that
    is no day (``end_date: 2025-02-30``, which YAML's date pattern matches) a traceback
    ending in ``day is out of range for month``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"config file {path}: {getattr(exc, 'strerror', None) or exc}"
    try:  # as Snakemake reads it: JSON, else YAML with PyYAML's FullLoader (through yte)
        return _top_level_problem(path, json.loads(text)) or _duplicate_key(path, text)
    except ValueError:
        pass
    try:
        return _top_level_problem(path, yaml.load(text, Loader=yaml.FullLoader)) or (
            _duplicate_key(path, text)
        )
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None)
        if mark is None or problem is None:
            return f"config file {path}: not valid YAML: " + " ".join(str(exc).split())
        context = f"{exc.context}: " if getattr(exc, "context", None) else ""
        return (
            f"config file {path}, line {mark.line + 1}, column {mark.column + 1}: not valid "
            f"YAML ({context}{problem})"
        )
    except ValueError as exc:  # a date constructor refused the value
        return _bad_date(path, text) or f"config file {path}: {exc}"


def _top_level_problem(path, content) -> str | None:
    """A file that is not a map of keys: Snakemake refuses it ("Config file must be given as
    JSON or YAML with keys at top level", naming no file), and ``crypto-lakehouse plan``
    failed with a traceback (a list) or took it for an empty config (no keys)."""
    if isinstance(content, dict):
        return None
    if content is None:
        return (
            f"config file {path}: holds no config keys (empty, or only comments); give at "
            "least one key (key: value), or leave --configfile out"
        )
    what = "a list" if isinstance(content, list) else f"a single value ({content!r})"
    return (
        f"config file {path}: is {what}, not a map of config keys (key: value lines at the "
        "top level)"
    )


def duplicate_key_problem(path: str | Path) -> str | None:
    """``_duplicate_key`` of a config file Snakemake has read (rules/common.smk: a bare
    ``snakemake --configfile``, whose reading keeps the last value silently); None when the
    file cannot be read here (Snakemake named that already)."""
    try:
        return _duplicate_key(path, Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def _duplicate_key(path, text: str) -> str | None:
    """The first key given twice in one map of the file, named by key path and lines: YAML
    (and JSON) keep the last value, so the first was dropped without a word (a second
    ``spot:`` list below ``symbols:`` replaced the first)."""
    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:  # a form only Snakemake's JSON reading takes: nothing to add
        return None

    def walk(node, keys):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key, value in node.value:
                name = key.value
                if name in seen:
                    return (
                        f"config file {path}, line {key.start_mark.line + 1}: config key "
                        f"'{_key_name([*keys, name])}' is given twice (first on line "
                        f"{seen[name] + 1}); only the last would count: give it once"
                    )
                seen[name] = key.start_mark.line
                found = walk(value, [*keys, name])
                if found:
                    return found
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                found = walk(value, [*keys, i])
                if found:
                    return found
        return None

    if root is None or (
        isinstance(root, yaml.MappingNode)
        and any(key.value == "__use_yte__" for key, _ in root.value)
    ):
        return None  # a yte template (Snakemake renders it): its ?if keys may repeat
    return walk(root, [])


def _bad_date(path, text: str) -> str | None:
    """The first unquoted value YAML takes for a date and cannot construct, named by key
    path and line."""
    loader = yaml.FullLoader("")

    def walk(node, keys):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                found = walk(value, [*keys, key.value])
                if found:
                    return found
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                found = walk(value, [*keys, i])
                if found:
                    return found
        elif node.tag == TIMESTAMP_TAG:
            try:
                loader.construct_yaml_timestamp(node)
            except ValueError as exc:
                return (
                    f"config file {path}, line {node.start_mark.line + 1}: config key "
                    f"'{_key_name(keys)}': {node.value} is not a date ({exc}); a day is "
                    "YYYY-MM-DD"
                )
        return None

    return walk(yaml.compose(text, Loader=yaml.FullLoader), [])


# The form of every endpoint URL: a scheme, a host (and port), maybe a path; no query. The
# same pattern is in config/config.schema.yaml (endpoints.*, storage.endpoint_url).
URL_PATTERN = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")
URL_KEYS = (
    ("endpoints", "archive"),
    ("endpoints", "listing"),
    ("endpoints", "spot_api"),
    ("endpoints", "um_api"),
    ("endpoints", "cm_api"),
    ("storage", "endpoint_url"),
)


def _url_problems(config: dict) -> list[tuple[str, str]]:
    """Endpoint URLs that are not http(s) URLs, named by key (a URL without its scheme,
    ``127.0.0.1:9``, would otherwise fail only at its first request). A trailing slash of
    ``endpoints.*`` is removed (in place): URLs are built from it as ``<url>/<key>`` or
    ``<url><path>`` (the start-up probe of a REST host: ``<url>/api/v3/ping``)."""
    problems = []
    for block, name in URL_KEYS:
        section = config.get(block)
        if not isinstance(section, dict) or not isinstance(section.get(name), str):
            continue  # absent, null (storage.endpoint_url) or not a string: the schema's
        url, key = section[name], f"{block}.{name}"
        if not URL_PATTERN.fullmatch(url):
            example = (
                "https://data.binance.vision" if block == "endpoints" else "http://127.0.0.1:8333"
            )
            message = f"{url!r} is not an http:// or https:// URL with a host (e.g. {example})"
            problems.append((key, f"config key {key!r}: {message}"))
        elif block == "endpoints" and url.endswith("/"):
            section[name] = url.rstrip("/")
    return problems


def _run_dir_problems(config: dict) -> list[tuple[str, str]]:
    """A ``run_dir`` on S3 (Snakemake stats, locks and deletes these files: a local folder),
    named with the other problems rather than alone once they are fixed; and a ``run_dir``
    or ``data_dir`` that looks like a URL but is no ``s3://bucket[/prefix]`` (``S3://b``,
    ``gs://b``, ``s3:///prefix``): it was taken for a local folder named ``S3:`` below the
    working directory, or for the bucket ``prefix``, and ``s3://`` alone failed naming no key."""
    problems = []
    run_dir = config.get("run_dir")
    if isinstance(run_dir, str) and run_dir.startswith("s3:/"):
        problems.append(("run_dir", f"config key 'run_dir': {run_dir!r} is on S3; Snakemake's "
                         "own files need a local folder (docs/storage.md, the run directory)"))  # fmt: skip
    elif isinstance(run_dir, str) and URL_SCHEME.match(run_dir):
        problems.append(("run_dir", f"config key 'run_dir': {run_dir!r} is a URL, not a local "
                         "folder (docs/storage.md, the run directory)"))  # fmt: skip
    data_dir = config.get("data_dir")
    if isinstance(data_dir, str) and URL_SCHEME.match(data_dir):
        if not S3_DATA_DIR.fullmatch(data_dir):
            problems.append(("data_dir", f"config key 'data_dir': {data_dir!r} is neither a "
                             "local folder nor an S3 data dir, s3://bucket or "
                             "s3://bucket/prefix (docs/storage.md)"))  # fmt: skip
    return problems


# A value that starts like a URL (``s3://``, ``S3://``, ``gs://``; also ``s3:/``, the
# collapsed form storage.is_remote accepts), and the S3 data dir form: a bucket (no
# whitespace), then maybe a prefix.
URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")
S3_DATA_DIR = re.compile(r"s3://[^/\s]+(/\S*)?")


def _normalise_folders(config: dict) -> None:
    """``data_dir`` and ``run_dir`` in one spelling (in place): a local path without a
    trailing slash, doubled slashes or a leading ``./`` (``./data/binance_data/`` ->
    ``data/binance_data``), an S3 one without a trailing slash. Every job's arguments and
    output paths are built from them: a trailing slash gave paths with ``//`` (Snakemake
    warned that its file matching may be inconsistent) and new job arguments, so every job
    of an up-to-date data dir ran again."""
    for key in ("data_dir", "run_dir"):
        value = config.get(key)
        if not isinstance(value, str) or not value or URL_SCHEME.match(value):
            if isinstance(value, str) and S3_DATA_DIR.fullmatch(value) and key == "data_dir":
                config[key] = value.rstrip("/")
            continue  # absent, null, or a URL (refused, or an s3:// data dir done above)
        config[key] = _one_spelling(value)


def _one_spelling(path: str) -> str:
    """``path`` without doubled slashes, a leading ``./`` or a trailing slash; ``..`` is
    kept (below a symbolic link it is not the parent folder)."""
    path = re.sub(r"/{2,}", "/", path)
    while path.startswith("./") and len(path) > 2:
        path = path[2:]
    return path.rstrip("/") or "/"


def _empty_symbol_lists(config: dict) -> list[tuple[str, str]]:
    """``symbols.<trade type>: []`` of a trade type in use: a run of no symbols at all
    (docs/config.md gives no meaning to it)."""
    symbols = config.get("symbols")
    trade_types = config.get("trade_types", list(TRADE_TYPES))
    if not isinstance(symbols, dict) or not isinstance(trade_types, list):
        return []
    problems = []
    for trade_type in TRADE_TYPES:
        if trade_type in trade_types and symbols.get(trade_type) == []:
            key = f"symbols.{trade_type}"
            problems.append(
                (
                    key,
                    f"config key {key!r}: empty list: give symbols, 'all', or leave "
                    f"{trade_type} out of trade_types",
                )
            )
    return problems


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
    return [message for _, message, _ in _unknown_keys(config, schema, root, path)]


def _unknown_keys(config, schema: dict, root: dict | None = None, path=None) -> list[tuple]:
    """``unknown_keys`` as (path of the key, message, closest valid key or None)."""
    root = schema if root is None else root
    path = path or []
    schema = _resolve(schema, root)
    found: list[tuple] = []
    if isinstance(config, dict):
        props = schema.get("properties", {})
        for key, value in config.items():
            if key in props:
                found += _unknown_keys(value, props[key], root, [*path, key])
            elif schema.get("additionalProperties") is False and props:
                close = difflib.get_close_matches(str(key), list(props), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else "valid keys: " + ", ".join(props)
                message = f"unknown config key {_key_name([*path, key])!r}: {hint}"
                found.append(((*path, key), message, close[0] if close else None))
    elif isinstance(config, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(config):
            found += _unknown_keys(item, schema["items"], root, [*path, i])
    return found


def _interval_problems(config: dict) -> list[tuple[str, str]]:
    """(key, message) of each interval that is not a Binance kline interval the pipeline can
    build. A value that is not a string (a list, a map) is left to the schema."""
    problems = []
    if isinstance(config.get("interval"), str):
        problems.append(("interval", check_base_interval(config["interval"])))
    targets = (config.get("resample") or {}).get("targets") or []
    if isinstance(targets, list):
        for i, target in enumerate(targets):
            if isinstance(target, dict) and isinstance(target.get("interval"), str):
                key = f"resample.targets[{i}].interval"
                problems.append((key, check_resample_interval(key, target["interval"])))
    agg_klines = config.get("agg_klines")
    agg = agg_klines.get("intervals") if isinstance(agg_klines, dict) else None
    for i, value in enumerate(agg if isinstance(agg, list) else []):
        if isinstance(value, str) and re.fullmatch(r"[1-9][0-9]*[smh]", value):
            if DAY_MS % interval_ms(value):  # else the schema's pattern names it
                key = f"agg_klines.intervals[{i}]"
                problems.append(
                    (key, f"config key {key!r}: {value!r} does not divide a day (a candle "
                     "file per UTC day; e.g. 1s, 1m, 5m, 1h, 8h)")
                )  # fmt: skip
    return [(key, message) for key, message in problems if message]


def _schema_problems(config: dict, schema: dict) -> list[tuple]:
    """Every other violation, one (error, message) pair each, in the order of the keys:
    the key and jsonschema's short message."""
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        key = _key_name(list(error.absolute_path))
        out.append((error, f"config key {key!r}: {_message(error)}"))
    return out


def _said_already(error: jsonschema.ValidationError, reported: set[str], unknown: dict) -> bool:
    """A schema error that repeats a problem reported by a check of our own: one at a key
    those checks named (or inside it), an "Additional properties" error whose every extra
    key was named as an unknown key, or a required key missing because it is misspelled
    (``unknown``: path of each unknown key -> the valid key it is closest to)."""
    path = list(error.absolute_path)
    if any(_key_name(path[:n]) in reported for n in range(1, len(path) + 1)):
        return True
    if not isinstance(error.instance, dict):
        return False
    if error.validator == "additionalProperties":
        defined = error.schema.get("properties", {})
        extra = [k for k in error.instance if k not in defined]
        return bool(extra) and all((*path, k) in unknown for k in extra)
    if error.validator == "required":
        guessed = {unknown.get((*path, k)) for k in error.instance}
        missing = [k for k in error.validator_value if k not in error.instance]
        return any(error.message.startswith(f"{k!r} ") and k in guessed for k in missing)
    return False


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


def fill_defaults(config: dict, schema: dict) -> None:
    """Set, in place, every default of ``schema`` that ``config`` leaves out and validate it:
    what Snakemake's ``validate(config, schema=..., set_default=True)`` does, with the same
    jsonschema extension (a ``properties`` keyword first sets its subschemas' defaults,
    then validates them), on a schema already read (``load_schema``): Snakemake's reads the
    file again with its pure-Python YAML, 0.02-0.04 s of every Snakemake start (issue 11).
    A violation raises ConfigError naming the key (after ``check_user_config``, none is
    left)."""
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        for name, prop in properties.items():
            if "default" in prop:
                instance.setdefault(name, prop["default"])
        yield from validate_properties(validator, properties, instance, subschema)

    filling = jsonschema.validators.extend(base, {"properties": set_defaults})
    try:
        filling(schema).validate(config)
    except jsonschema.ValidationError as error:
        key = _key_name(list(error.absolute_path))
        raise config_error([f"config key {key!r}: {_message(error)}"]) from None


def check_user_config(config: dict, schema_path: str | Path, schema: dict | None = None) -> None:
    """Raise ConfigError with one line per problem, every problem at once (dates, endpoint
    URLs, data_dir and run_dir normalised in place first). ``schema``: the schema at
    ``schema_path`` already read (``load_schema``; rules/common.smk reads it once)."""
    schema = load_schema(schema_path) if schema is None else schema
    _normalise_folders(config)
    unknown = _unknown_keys(config, schema)
    own = (
        _date_problems(config)
        + _interval_problems(config)
        + _url_problems(config)
        + _run_dir_problems(config)
        + _empty_symbol_lists(config)
    )
    reported = {key for key, _ in own}
    problems = [message for _, message, _ in unknown] + [message for _, message in own]
    guesses = {path: close for path, _, close in unknown}
    for error, message in _schema_problems(config, schema):
        if not _said_already(error, reported, guesses) and message not in problems:
            problems.append(message)
    if problems:
        raise config_error(problems)
