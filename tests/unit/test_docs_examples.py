"""The docs against the code: every config key of the schema in docs/config.md with the
schema's type and default, every config example of the docs valid, every command line of
the docs accepted by the command's parser."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from crypto_lakehouse.cli import build_parser
from crypto_lakehouse.configuration import check_user_config
from tests.conftest import REPO_ROOT

SCHEMA_PATH = REPO_ROOT / "config" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
PAGES = [REPO_ROOT / "README.md"] + sorted(
    p for p in (REPO_ROOT / "docs").glob("*.md") if p.name != "benchmarks.md"
)
CONFIG_PAGE = (REPO_ROOT / "docs" / "config.md").read_text()


def _schema_keys(node: dict, prefix: str = "") -> dict[str, dict]:
    """Every key of the schema by its dotted name (objects and their properties alike)."""
    if "$ref" in node:
        node = {**SCHEMA["$defs"][node["$ref"].split("/")[-1]], **node}
    out = {prefix: node} if prefix else {}
    if node.get("type") == "object":
        for name, sub in node.get("properties", {}).items():
            out.update(_schema_keys(sub, f"{prefix}.{name}" if prefix else name))
    return out


KEYS = _schema_keys(SCHEMA)
LEAVES = {k for k, node in KEYS.items() if not node.get("properties")}


def _documented_rows() -> dict[str, list[str]]:
    """The rows of the key tables of docs/config.md (section "Keys"), by dotted key. The
    generate table names the keys of one trade type's block (`generate.spot.*`)."""
    section = CONFIG_PAGE.split("\n## Keys\n")[1].split("\n## Dates\n")[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `([^`]+)` \|", line)
        if m:
            key = m.group(1)
            key = key if key in KEYS else f"generate.spot.{key}"
            rows[key] = [cell.strip() for cell in line.strip("|").split(" | ")]
    return rows


ROWS = _documented_rows()


def test_config_md_documents_every_key_of_the_schema_and_no_other():
    assert set(ROWS) <= set(KEYS), sorted(set(ROWS) - set(KEYS))
    undocumented = [
        k
        for k in LEAVES
        if not any(k == d or k.startswith(f"{d}.") for d in ROWS)
        and re.sub(r"^generate\.\w+\.", "generate.spot.", k) not in ROWS
    ]
    assert not undocumented


def _schema_types(node: dict) -> set[str]:
    kinds = node.get("type", [])
    kinds = {kinds} if isinstance(kinds, str) else set(kinds)
    if "enum" in node or "const" in node:
        kinds.add("string")
    for alternative in node.get("oneOf", []):
        kinds |= _schema_types(alternative)
    return kinds


@pytest.mark.parametrize("key", sorted(k for k in ROWS if len(ROWS[k]) == 4))
def test_config_md_gives_the_schema_type_bounds_and_default(key):
    _, kind, default, _ = ROWS[key]
    node = KEYS[key]
    for word in ("integer", "number", "boolean"):
        if kind.startswith(word):
            assert word in _schema_types(node), (key, kind)
    bounds = re.search(r"(?:≥ ([\d.]+)|> ([\d.]+)|(\d+)–(\d+))", kind)
    if bounds and kind.split()[0] in ("integer", "number"):
        ge, gt, low, high = bounds.groups()
        assert node.get("minimum") == (float(ge) if ge else float(low) if low else None) or (
            ge == "1" and kind.endswith("MiB") and node["minimum"] == 1 << 20
        ), (key, kind)
        assert node.get("exclusiveMinimum") == (float(gt) if gt else None), (key, kind)
        assert node.get("maximum") == (float(high) if high else None), (key, kind)
    if default.startswith("`"):  # a literal first (`32`, `null` (AWS), `true` (spot: …))
        literal = yaml.safe_load(default.split("`")[1])
        schema_default = node.get("default")
        if key.startswith("generate.spot."):  # the per-trade-type defaults (um, cm)
            schema_default = SCHEMA["$defs"]["generate_options"]["properties"][
                key.split(".")[-1]
            ].get("default")
        assert literal == schema_default, (key, default)


def _doc_config_examples() -> list[tuple[str, str]]:
    """(where, YAML) of every config example of the docs: a ```yaml block, or an indented
    block that starts with a `# name.yaml` comment."""
    out = []
    for page in PAGES:
        text = page.read_text()
        for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
            out.append((page.name, block))
        for m in re.finditer(r"^    # [\w.-]+\.yaml\n((?:    \S.*\n|    \s+.*\n)+)", text, re.M):
            out.append((page.name, "\n".join(line[4:] for line in m.group(1).splitlines())))
    return out


EXAMPLES = _doc_config_examples()


def test_the_docs_have_config_examples():
    assert len(EXAMPLES) >= 4, EXAMPLES  # all-spot, bhds, cluster's srun, storage's s3


@pytest.mark.parametrize("where,text", EXAMPLES, ids=[f"{w}:{t.split()[0]}" for w, t in EXAMPLES])
def test_every_config_example_of_the_docs_is_valid(where, text):
    check_user_config(yaml.safe_load(text), SCHEMA_PATH)


def _doc_command_lines() -> list[tuple[str, str]]:
    """(page, command) of every `crypto-lakehouse ...` / `python -m crypto_lakehouse ...`
    example line of the docs (indented), with its continuation lines."""
    start = re.compile(r"^(\s{4,})(?:crypto-lakehouse|python3? -m crypto_lakehouse) (.*)$")
    out = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            m = start.match(line)
            if not m:
                continue
            words = [m.group(2)]
            for more in lines[i + 1 :]:  # deeper indented, or after a trailing backslash
                if len(more) - len(more.lstrip()) > len(m.group(1)) or words[-1].endswith("\\"):
                    words.append(more.strip())
                else:
                    break
            command = " ".join(w.rstrip("\\") for w in words).split(" #")[0]
            out.append((page.name, command))
    return out


COMMANDS = _doc_command_lines()


def test_the_docs_have_command_lines():
    assert len(COMMANDS) >= 15, COMMANDS


@pytest.mark.parametrize("where,command", COMMANDS, ids=[f"{w}:{c}"[:70] for w, c in COMMANDS])
def test_every_command_line_of_the_docs_parses(where, command, tmp_path):
    # a usage line's [optional] parts and alternatives (text|json) are given as written
    command = re.sub(r"[\[\]]|\.\.\.|…", "", command)
    command = re.sub(r"(\w)\|[\w|]+", r"\1", command)
    # --jobs N, --run-dir DIR (must exist), --start/--end YYYY-MM-DD
    placeholders = {"N": "2", "DIR": str(tmp_path), "YYYY-MM-DD": "2024-01-31"}
    argv = [placeholders.get(word, word) for word in shlex.split(command)]
    argv = argv[: argv.index("--")] if "--" in argv else argv  # Snakemake's own
    build_parser().parse_args(argv)  # exits (SystemExit 2) naming an unknown option


@pytest.mark.parametrize(
    "page", PAGES + [REPO_ROOT / "docs" / "benchmarks.md"], ids=lambda p: p.name
)
def test_every_table_row_of_the_docs_is_one_line(page):
    """A table row is one line from ``|`` to ``|``: a row broken in two (a merge of two
    versions of a paragraph) ends the table there, and the rest of it shows as text."""
    in_code = False
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if not in_code and line.startswith("|"):
            assert line.rstrip().endswith("|"), f"{page.name}:{number}: a table row cut short"


def _doc_snakemake_lines() -> list[tuple[str, str]]:
    """(page, arguments) of every indented `snakemake ...` example line of the docs."""
    start = re.compile(r"^\s{4,}(?:\.venv/bin/)?snakemake (.*)$")
    return [
        (page.name, m.group(1).split(" #")[0])
        for page in PAGES
        for m in map(start.match, page.read_text().splitlines())
        if m
    ]


SNAKEMAKE_LINES = _doc_snakemake_lines()


def test_the_docs_have_snakemake_lines():
    assert len(SNAKEMAKE_LINES) >= 15, SNAKEMAKE_LINES


@pytest.mark.parametrize(
    "where,command", SNAKEMAKE_LINES, ids=[f"{w}:{c}"[:70] for w, c in SNAKEMAKE_LINES]
)
def test_every_snakemake_line_of_the_docs_parses(where, command):
    """Snakemake's own parser (an unknown or misspelt option exits 2); the runs themselves
    are the workflow and end-to-end tests'."""
    from snakemake.cli import get_argument_parser

    get_argument_parser().parse_args(shlex.split(command))
