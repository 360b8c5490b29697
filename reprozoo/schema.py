"""YAML files read and JSON Schema validation with one-line errors: what every config reader uses.

`read_yaml` reads a user's file (one line naming the file for a syntax error, text that is not
UTF-8, nesting thousands deep, aliases that expand beyond any config's size); `validate_against`
checks an instance against a schema (config.schema.yaml, study.schema.yaml, or one of their
$defs) and says the first problem as `config key '<key>': <what>`, with a hint where YAML read a
value as something else than it seems. Torch-free: the Snakefile imports it.
"""
from __future__ import annotations

import math
from pathlib import Path

import jsonschema
import yaml

from reprozoo.errors import ConfigError
from reprozoo.stages import ROOT

SCHEMA_PATH = ROOT / "workflow" / "schemas" / "config.schema.yaml"
STUDY_SCHEMA_PATH = ROOT / "workflow" / "schemas" / "study.schema.yaml"  # the study's record (config/study.yaml)
# PyYAML's safe loader on libyaml where the wheel has it: the same values, several times faster, and every
# Snakemake start reads the config, the study's record and both schemas.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    with open(path) as f:
        return yaml.load(f, Loader=LOADER)


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a user's file (a config layer, params.yaml), or one ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=LOADER)
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                          f"{e.start}); save it as UTF-8") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: nested too deeply to be a config") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {path}: not valid YAML{where} ({problem})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    check_size(data, f"config file {path}")
    return data


MAX_VALUES = 100_000  # values a config may hold once its YAML aliases are expanded (the study's: about 1,500)


def check_size(cfg: dict, what: str = "config") -> None:
    """Refuse a config whose YAML aliases expand to more values than any config holds: nested anchors
    multiply (eight levels of ten make 10^8), and every later check would walk them all. Counted once
    per distinct object (an alias is the same object), so this costs what the file's size does."""
    sizes: dict[int, int | None] = {}

    def size(value) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        if id(value) not in sizes:
            sizes[id(value)] = None  # being counted: met again inside itself, it is a cycle
            items = value.values() if isinstance(value, dict) else value
            sizes[id(value)] = min(1 + sum(size(v) for v in items), MAX_VALUES + 1)
        elif sizes[id(value)] is None:
            raise ConfigError(f"{what}: a YAML alias refers to a value that holds it (a cycle)")
        return sizes[id(value)]

    try:
        total = size(cfg)
    except RecursionError:
        raise ConfigError(f"{what}: nested too deeply to be a config") from None
    if total > MAX_VALUES:
        raise ConfigError(f"{what}: its YAML aliases expand to more than {MAX_VALUES:,} values (nested anchors?); "
                          "write the values out")


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def _one_line(error: jsonschema.ValidationError, prefix: str = "") -> str:
    # Prefer the deepest, most specific error (e.g. inside allOf/if-then branches).
    error = jsonschema.exceptions.best_match([error, *error.context]) if error.context else error
    key = _key_path(error)
    if prefix:
        key = prefix if key == "(top level)" else f"{prefix}.{key}"
    message = error.message
    if error.validator == "additionalProperties":
        message = message.replace("Additional properties are not allowed", "unknown key")
    if error.validator == "type" and isinstance(error.instance, str) and _number_like(error.instance):
        if error.instance.lstrip("+-").isdigit():  # no YAML reads 2 as text; `snakemake --config a={b: 2}` does
            message += " (a number read as text: `snakemake --config` reads values inside {...} as text; " \
                       "set it in a config file given with --configfile)"
        else:
            message += f" (YAML reads {error.instance} as text: write it with a dot, e.g. {_with_dot(error.instance)})"
    if error.validator == "type" and isinstance(error.instance, bool) and "string" in str(error.validator_value):
        message += " (YAML reads yes/no/on/off/true/false as a boolean: quote it)"
    return f"config key '{key}': {message}"


def _number_like(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _with_dot(text: str) -> str:
    """1e-3 -> 1.0e-3: the float YAML 1.1 (PyYAML) reads as a number."""
    mantissa, _, exponent = text.lower().partition("e")
    return (mantissa if "." in mantissa else mantissa + ".0") + ("e" + exponent if exponent else "")


def validate_against(instance: dict, schema_ref: str | None = None, prefix: str = "",
                     schema: dict | None = None) -> None:
    """Validate against the whole schema (the config's, unless given), or one of its $defs (e.g. 'resolved_model')."""
    schema = schema or load_schema()
    if schema_ref is not None:
        schema = {**schema, "$ref": f"#/$defs/{schema_ref}"}
        for key in ("type", "required", "properties", "additionalProperties"):
            schema.pop(key, None)
    validator = _Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        raise ConfigError(_one_line(error, prefix))
    _check_finite(instance, prefix)


def _is_strict_integer(checker, instance) -> bool:
    """An integer is an int: 64.0 is not (JSON Schema would accept it), nor is True."""
    return isinstance(instance, int) and not isinstance(instance, bool)


# Draft 2020-12 with a stricter `integer`: `batch_size: 64.0` is refused, not truncated later.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_strict_integer))


def _check_finite(value, key: str) -> None:
    """YAML's .nan and .inf pass every numeric bound of a schema; refuse them anywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key or '(top level)'}': {value} is not a finite number")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        _check_finite(v, f"{key}.{k}" if key else str(k))
