"""Experiment trackers (loggers.py): what TensorBoard and wandb hold, read back with their own formats, equals
metrics.jsonl, across a resume too; a missing package ends the run with one line before anything is written.
Tiny char-level runs on CPU; wandb only in its offline mode, and only where it is installed."""
import glob
import json
import shutil
import struct
import sys
from pathlib import Path

import pytest
import torch

from conftest import read_metrics, run_train

BASE = ['--max_iters=4', '--eval_interval=2', '--peak_tflops=1.0']   # peak_tflops: train rows carry an MFU


def expected_series(rows):
    """{tag: [(iter, value)]} of the numbers of metrics.jsonl rows, as loggers.RunLoggers names them."""
    out = {}
    for r in rows:
        for k, v in r.items():
            if k in ('iter', 'kind') or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            out.setdefault(f"{r['kind']}/{k}", []).append((r['iter'], v))
    return out


def tensorboard_series(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(logdir))
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()['scalars']}


def assert_same_series(got, want):
    assert sorted(got) == sorted(want)
    for tag in want:
        g, w = sorted(got[tag]), sorted(want[tag])
        assert [s for s, _ in g] == [s for s, _ in w], tag
        # TensorBoard stores a scalar as float32: a relative error of 1e-6 is a few of its ulps
        assert [v for _, v in g] == pytest.approx([v for _, v in w], rel=1e-6, abs=1e-30), tag


def test_tensorboard_matches_metrics_across_resumes(char_data, tmp_path):
    pytest.importorskip('tensorboard')
    out = tmp_path / 'run'
    common = [f'--data_dir={char_data}', f'--out_dir={out}', '--tensorboard_log=True']
    run_train([*common, *BASE])
    shutil.copy(out / 'last.pt', tmp_path / 'last_at_4.pt')
    run_train([*common, *BASE, '--init_from=resume', '--max_iters=8'])
    rows = read_metrics(out)
    assert max(r['iter'] for r in rows) == 8
    got = tensorboard_series(out / 'tensorboard')
    assert_same_series(got, expected_series(rows))
    for tag in ('train/loss', 'train/lr', 'train/grad_norm', 'train/tokens_per_s', 'train/mfu',
                'train/nonfinite_skipped', 'eval/val_loss', 'eval/train_loss', 'eval/train_val_gap'):
        assert tag in got, tag
    # a run stopped after iter 8 whose last checkpoint is at iter 4: resuming drops rows 5..8 of metrics.jsonl and
    # logs them again; TensorBoard must drop the first copies too (purge_step), or steps 5..8 would appear twice
    shutil.copy(tmp_path / 'last_at_4.pt', out / 'last.pt')
    run_train([*common, *BASE, '--init_from=resume', '--max_iters=8'])
    rows2 = read_metrics(out)
    assert [r['iter'] for r in rows2] == [r['iter'] for r in rows]
    assert rows2 != rows  # elapsed and tokens/s of iters 5..8 were measured again
    assert len(list((out / 'tensorboard').glob('events.out.tfevents.*'))) == 3
    assert_same_series(tensorboard_series(out / 'tensorboard'), expected_series(rows2))


def wandb_records(path):
    """The protobuf Records of a wandb transaction log (run-ID.wandb): a 7-byte header (':W&B', version), then
    LevelDB log records in 32 KiB blocks, each with a 7-byte header (crc32, length, type FULL=1 / FIRST=2 /
    MIDDLE=3 / LAST=4); a block's tail shorter than a header is padding."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = Path(path).read_bytes()
    assert data[:4] == b':W&B'
    pos, buf, out = 7, b'', []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack('<IHB', data[pos:pos + 7])
        if kind == 0 and n == 0:  # zero padding to the end of the block
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            r = pb.Record()
            r.ParseFromString(buf)
            out.append(r)
            buf = b''
    return out


def test_wandb_offline_matches_metrics_across_resume(char_data, tmp_path, monkeypatch):
    pytest.importorskip('wandb')
    for k, v in {'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true', 'WANDB_CONFIG_DIR': str(tmp_path / 'cfg'),
                 'WANDB_CACHE_DIR': str(tmp_path / 'cache'), 'WANDB_DATA_DIR': str(tmp_path / 'data')}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    out = tmp_path / 'run'
    common = [f'--data_dir={char_data}', f'--out_dir={out}', '--wandb_log=True', '--wandb_project=tiny-test']
    run_train([*common, *BASE])
    run_train([*common, *BASE, '--init_from=resume', '--max_iters=8'])
    run_id = torch.load(out / 'last.pt', weights_only=True)['wandb_run_id']
    files = sorted(glob.glob(str(out / 'wandb' / 'offline-run-*' / '*.wandb')))
    assert len(files) == 2
    series, runs = {}, []
    for f in files:
        for r in wandb_records(f):
            kind = r.WhichOneof('record_type')
            if kind == 'run':
                runs.append((r.run.run_id, r.run.project, r.run.display_name))
            elif kind == 'history':
                item = {i.key or '/'.join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                for k, v in item.items():
                    if not k.startswith('_') and k != 'iter':
                        series.setdefault(k, []).append((item['iter'], v))
    assert runs == [(run_id, 'tiny-test', 'run')] * 2   # the resumed process continued the same run
    # wandb keeps the float64 numbers as JSON: equal to metrics.jsonl's
    assert {k: sorted(v) for k, v in series.items()} == {k: sorted(v) for k, v in expected_series(read_metrics(out)).items()}


def test_missing_package_is_one_line_and_nothing_is_imported_when_off(monkeypatch, capsys, tmp_path):
    from loggers import RunLoggers
    monkeypatch.setitem(sys.modules, 'wandb', None)                    # import wandb -> ImportError
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None)
    off = RunLoggers(tmp_path / 'run', {'wandb_log': False, 'tensorboard_log': False})
    off.log({'kind': 'train', 'iter': 1, 'loss': 1.0})
    assert off.state() == {} and not (tmp_path / 'run').exists()
    for key, install in (('wandb_log', 'pip install wandb'), ('tensorboard_log', 'pip install tensorboard')):
        with pytest.raises(SystemExit) as e:
            RunLoggers(tmp_path / 'run', {key: True})
        assert e.value.code == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f'--{key}=True' in err and err.endswith(install)


def test_train_refuses_a_missing_wandb_before_writing(char_data, tmp_path):
    try:
        import wandb  # noqa: F401
        pytest.skip('wandb is installed here: the refusal is tested in-process above')
    except ImportError:
        pass
    out = tmp_path / 'run'
    r = run_train([f'--data_dir={char_data}', f'--out_dir={out}', '--wandb_log=True', '--max_iters=2'], check=False)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].endswith('pip install wandb')
    assert not out.exists()
