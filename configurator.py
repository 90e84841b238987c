"""
The nanoGPT configuration idiom, with checks.

    python train.py config/some_file.py --batch_size=32 --compile=False

A script declares its defaults as plain globals, then calls

    config = configure(globals(), sys.argv[1:])

Config files are plain Python that set globals. Each `--key=value` override is parsed as a Python
literal (falling back to a plain string). Every key must already exist in the script's defaults
(an unknown key fails with one line naming the closest known keys) and every value must have the
default's type (an int is accepted where a float is expected; bools accept True/False); a float must be
finite (--learning_rate=1e999 is inf, refused). check_values is the one range checker the scripts share.
"""
import ast
import difflib
import math
import sys

CONFIG_TYPES = (int, float, bool, str, type(None))


class ConfigError(SystemExit):
    """A configuration mistake: one line on stderr, exit status 2."""

    def __init__(self, msg):
        super().__init__(2)
        self.msg = msg

    def __str__(self):
        return self.msg


def config_keys(namespace):
    """The configurable globals of a script: public names bound to plain values."""
    return [k for k, v in namespace.items() if not k.startswith('_') and isinstance(v, CONFIG_TYPES)]


def _unknown(key, known):
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join('--' + c for c in close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _coerce(key, value, default, auto_keys=()):
    """Check value against the type of the default; return the value to store."""
    if default is None:
        return value
    if key in auto_keys and value == 'auto':
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"--{key} must be True or False, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"--{key} must be an integer, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # an int beyond any float
                value = math.inf
            if not math.isfinite(value):
                raise ConfigError(f"--{key} must be a finite number, got {value!r}")
            return value
        raise ConfigError(f"--{key} must be a number, got {value!r}")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise ConfigError(f"--{key} must be a string, got {value!r}")
    return value


def _parse_value(text):
    if text in ('true', 'false'):
        return text == 'true'
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as --device=cuda


def apply_config(namespace, argv, auto_keys=(), ignore_unknown=False, given=None):
    """Apply config files and --key=value overrides to namespace (a dict); return the resolved
    config {key: value}. Keys in auto_keys also accept the string 'auto'. Raises ConfigError with
    a one-line message on any mistake. ignore_unknown=True skips keys the namespace does not have
    (for a reader that needs only some of a config's keys, e.g. bench.py's model keys). given: a set that
    receives every key a config file or an override set (train.py's resume takes the others from the run)."""
    given = set() if given is None else given
    keys = config_keys(namespace)
    defaults = {k: namespace[k] for k in keys}
    for arg in argv:
        if not arg.startswith('--'):
            try:
                with open(arg) as f:
                    src = f.read()
            except OSError:
                raise ConfigError(f"config file {arg!r} not found (give a path like config/gpt_shakespeare_char_cpu.py)")
            scope = {}
            try:
                exec(compile(src, arg, 'exec'), scope)
            except Exception as e:
                raise ConfigError(f"config file {arg} failed: {type(e).__name__}: {e}")
            for k, v in scope.items():
                if k.startswith('_') or type(v).__name__ == 'module':
                    continue
                if k not in defaults and ignore_unknown:
                    continue
                if k not in defaults:
                    e = _unknown(k, keys)
                    e.msg = f"{arg}: {e.msg}"
                    raise e
                namespace[k] = _coerce(k, v, defaults[k], auto_keys)
                given.add(k)
        else:
            key, eq, text = arg[2:].partition('=')
            if not eq:
                raise ConfigError(f"argument {arg!r} must look like --key=value")
            if key not in defaults and ignore_unknown:
                continue
            if key not in defaults:
                raise _unknown(key, keys)
            value = _parse_value(text)
            if isinstance(defaults[key], str) and not isinstance(value, str):
                value = text  # a string key keeps what was typed: --artifact_layers=0,4,8
            namespace[key] = _coerce(key, value, defaults[key], auto_keys)
            given.add(key)
    return {k: namespace[k] for k in keys}


def configure(namespace, argv=None, auto_keys=(), ignore_unknown=False, given=None):
    """apply_config for a script: on a mistake print the one line and exit with status 2."""
    try:
        return apply_config(namespace, sys.argv[1:] if argv is None else argv, auto_keys, ignore_unknown, given)
    except ConfigError as e:
        config_fail(e.msg)


def config_fail(msg):
    """The one line of a configuration mistake (cut to 600 characters: a value may be huge), exit status 2."""
    msg = ' '.join(str(msg).split('\n'))
    print(f"config error: {msg if len(msg) <= 600 else msg[:600] + f'... ({len(msg):,} characters)'}", file=sys.stderr)
    raise SystemExit(2)


def check_values(values, at_least=None, choices=None, between=None):
    """The range checker of every script, run before anything is loaded or written: at_least {key: minimum},
    choices {key: allowed values}, between {key: (low, high)}, both ends included. The first value out of range
    ends the program with one line (exit status 2) naming the option, what it must be and what it got."""
    bad = config_fail
    for k, low in (at_least or {}).items():
        v = values[k]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < low:
            bad(f"--{k} must be at least {low}, got {v!r}")
    for k, (low, high) in (between or {}).items():
        v = values[k]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not low <= v <= high:
            bad(f"--{k} must lie in [{low}, {high}], got {v!r}")
    for k, allowed in (choices or {}).items():
        if values[k] not in allowed:
            bad(f"--{k} must be one of {', '.join(map(str, allowed))}, got {values[k]!r}")


def format_config(config):
    width = max(len(k) for k in config) if config else 0
    return '\n'.join(f"  {k:<{width}} = {v!r}" for k, v in config.items())
