"""configurator.py: config files + --key=value overrides with key and type checks, one-line errors."""
import subprocess
import sys

import pytest

from configurator import apply_config, config_keys, ConfigError, configure
from conftest import REPO, train_env


def defaults():
    return {'batch_size': 12, 'block_size': 256, 'learning_rate': 6e-4, 'compile': False, 'device': 'auto',
            'out_dir': 'out', 'init_from': 'scratch', 'optional': None, '_private': 1, 'np': sys}


def one_line(err):
    msg = str(err)
    assert msg and '\n' not in msg, f"error message is not one line: {msg!r}"
    return msg


def test_config_keys_are_public_plain_values():
    assert set(config_keys(defaults())) == {'batch_size', 'block_size', 'learning_rate', 'compile', 'device',
                                            'out_dir', 'init_from', 'optional'}


def test_overrides_parse_literals_and_bare_strings():
    ns = defaults()
    cfg = apply_config(ns, ['--batch_size=32', '--learning_rate=1e-3', '--compile=True', '--device=cuda:1',
                            "--out_dir='out-x'", '--optional=3'])
    assert ns['batch_size'] == 32 and type(ns['batch_size']) is int
    assert ns['learning_rate'] == 1e-3
    assert ns['compile'] is True
    assert ns['device'] == 'cuda:1' and ns['out_dir'] == 'out-x'
    assert ns['optional'] == 3  # a None default accepts any value
    assert cfg == {k: ns[k] for k in config_keys(defaults())}
    assert ns['_private'] == 1  # untouched


@pytest.mark.parametrize('text, value', [('True', True), ('False', False), ('true', True), ('false', False)])
def test_bools_accept_true_false(text, value):
    ns = defaults()
    apply_config(ns, [f'--compile={text}'])
    assert ns['compile'] is value


def test_int_accepted_for_float_key():
    ns = defaults()
    apply_config(ns, ['--learning_rate=1'])
    assert ns['learning_rate'] == 1.0 and type(ns['learning_rate']) is float


def test_unknown_key_names_the_closest_known_keys():
    with pytest.raises(ConfigError) as e:
        apply_config(defaults(), ['--batch_sise=3'])
    msg = one_line(e.value)
    assert 'batch_sise' in msg and '--batch_size' in msg
    assert 'learning_rate' not in msg  # only close matches are suggested
    assert e.value.code == 2


def test_unknown_key_without_close_match():
    with pytest.raises(ConfigError) as e:
        apply_config(defaults(), ['--zzzzzz=1'])
    msg = one_line(e.value)
    assert 'zzzzzz' in msg and 'did you mean' not in msg


@pytest.mark.parametrize('arg, key', [
    ('--batch_size=abc', 'batch_size'),
    ("--learning_rate='x'", 'learning_rate'),
    ('--learning_rate=abc', 'learning_rate'),
    ('--compile=3', 'compile'),
    ('--compile=1', 'compile'),          # 1 is not a bool
    ('--batch_size=2.5', 'batch_size'),  # a float is not an int
    ('--batch_size=True', 'batch_size'),  # a bool is not an int
    ('--learning_rate=True', 'learning_rate'),
    ('--batch_size=[1, 2]', 'batch_size'),
])
def test_wrong_type_is_a_one_line_error(arg, key):
    ns = defaults()
    before = dict(ns)
    with pytest.raises(ConfigError) as e:
        apply_config(ns, [arg])
    msg = one_line(e.value)
    assert key in msg
    assert ns[key] == before[key]  # nothing half-applied for that key


def test_string_keys_keep_what_was_typed():
    ns = defaults()
    apply_config(ns, ['--out_dir=2024', '--device=0,4,8'])
    assert ns['out_dir'] == '2024' and ns['device'] == '0,4,8'


def test_auto_keys_accept_auto_only_where_declared(tmp_path):
    ns = defaults()
    apply_config(ns, ['--batch_size=auto'], auto_keys=('batch_size',))
    assert ns['batch_size'] == 'auto'
    with pytest.raises(ConfigError):
        apply_config(defaults(), ['--batch_size=auto'])
    with pytest.raises(ConfigError):
        apply_config(defaults(), ['--block_size=auto'], auto_keys=('batch_size',))


def test_argument_without_equals_fails():
    with pytest.raises(ConfigError) as e:
        apply_config(defaults(), ['--batch_size'])
    assert 'key=value' in one_line(e.value)


def test_config_file_sets_globals_and_override_wins(tmp_path):
    f = tmp_path / 'exp.py'
    f.write_text("import math\nbatch_size = 5\nlearning_rate = 2 * math.pi\nout_dir = 'out-exp'\n_helper = [1]\n")
    ns = defaults()
    apply_config(ns, [str(f), '--batch_size=7'])
    assert ns['batch_size'] == 7            # the later override wins over the file
    assert ns['out_dir'] == 'out-exp'       # the file's other settings stay
    assert abs(ns['learning_rate'] - 6.283185307179586) < 1e-12
    ns = defaults()
    apply_config(ns, ['--batch_size=7', str(f)])
    assert ns['batch_size'] == 5            # arguments apply in order


def test_config_file_with_unknown_key_fails(tmp_path):
    f = tmp_path / 'bad.py'
    f.write_text("batch_size = 5\nlearnig_rate = 1e-3\n")
    with pytest.raises(ConfigError) as e:
        apply_config(defaults(), [str(f)])
    msg = one_line(e.value)
    assert 'bad.py' in msg and 'learnig_rate' in msg and '--learning_rate' in msg


def test_config_file_with_wrong_type_fails(tmp_path):
    f = tmp_path / 'bad.py'
    f.write_text("batch_size = 'big'\n")
    with pytest.raises(ConfigError) as e:
        apply_config(defaults(), [str(f)])
    assert 'batch_size' in one_line(e.value)


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        apply_config(defaults(), [str(tmp_path / 'nope.py')])
    assert 'not found' in one_line(e.value)
    f = tmp_path / 'broken.py'
    f.write_text("batch_size = = 3\n")
    with pytest.raises(ConfigError) as e:
        apply_config(defaults(), [str(f)])
    assert 'SyntaxError' in one_line(e.value)


def test_configure_prints_one_line_and_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        configure(defaults(), ['--batch_sise=3'])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'batch_size' in err[0]


def test_train_py_typo_exits_with_one_line():
    r = subprocess.run([sys.executable, 'train.py', '--batch_sise=3'], cwd=REPO, env=train_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert 'batch_size' in lines[0] and 'batch_sise' in lines[0]
