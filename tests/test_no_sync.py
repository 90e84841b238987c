"""The training step never waits for the device (docs/training.md, No host sync in the step): between log
intervals nothing in the step reads a tensor back to the host. Each tiny run goes through the real train.py loop
with every aten op watched (a TorchDispatchMode, which also sees backward and the optimizer): a host read (`.item()`,
`bool(t)`, `float(t)`, `int(t)`, `if t:`, all of which end in aten._local_scalar_dense), `.tolist()`, or an
op whose output shape depends on the data (nonzero, boolean indexing, unique, ...) would be a device sync
on CUDA. They are recorded with the loop's iter_num, and the steps that are not next to an evaluation
or a log interval must have none. On CUDA the same run is also made under
torch.cuda.set_sync_debug_mode('warn'), which reports every synchronizing CUDA call.

It fails on the loop that read `if torch.isfinite(grad_norm)` every step (checked when the device-side
skip was written: steps 1, 2, 5 and 6 each recorded one aten._local_scalar_dense from that line)."""
import json
import subprocess
import sys
from collections import Counter

import pytest
import torch

from conftest import REPO, TINY, train_env

MAX_ITERS, LOG = 8, 4
# iter_num values at which a host read is allowed: 0 (set-up, the first evaluation, the first step's checks),
# a log interval (the step that ends one, and the log lines after it) and the final evaluation
ALLOWED = {0, MAX_ITERS} | {i for i in range(MAX_ITERS + 1) if i % LOG == 0 or (i + 1) % LOG == 0}
CHECKED = [i for i in range(MAX_ITERS) if i not in ALLOWED]  # 1, 2, 5, 6

OBJECTIVES = {  # one arch per objective
    'causal': ['--arch=gpt', '--dropout=0.1'],
    'mlm': ['--arch=encoder', '--bias=False', '--norm=rmsnorm', '--mlp=geglu', '--pos=rope', '--d_kv=8',
            '--doc_mask=True', '--mask_rate_max=0.5'],
    'diffusion': ['--arch=mdlm', '--cond_dim=16', '--pos=rope', '--bias=False', '--ema_decay=0.9',
                  '--gradient_accumulation_steps=2'],
}

DRIVER = r'''
import json, os, runpy, sys, traceback, warnings
from collections import Counter
import torch
from torch.utils._python_dispatch import TorchDispatchMode

train, out, args = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3:]
sys.path.insert(0, os.getcwd())  # the repository (the working directory)
aten = torch.ops.aten
records, ops = [], Counter()


def loop_position():
    """iter_num and line of train.py's module code on the current stack (None outside it)."""
    f = sys._getframe(1)
    while f is not None:
        if f.f_code.co_name == '<module>' and os.path.abspath(f.f_code.co_filename) == train:
            return f.f_globals.get('iter_num'), f.f_lineno
        f = f.f_back
    return None, None


loop = None  # train.py's module globals, once found on the stack


def find_loop():
    global loop
    f = sys._getframe(1)
    while f is not None:
        if f.f_code.co_name == '<module>' and os.path.abspath(f.f_code.co_filename) == train:
            loop = f.f_globals
            return
        f = f.f_back


def record(what):
    it, line = loop_position()
    if it is not None:
        records.append({'what': what, 'iter': it, 'line': line, 'stack': ''.join(traceback.format_stack()[-9:-2])})


HOST_READ = {aten._local_scalar_dense.default}
DATA_SHAPED = {aten.nonzero.default, aten.masked_select.default, aten._unique2.default, aten.unique_dim.default,
               aten.unique_consecutive.default, aten.repeat_interleave.Tensor}
INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default}


class Watch(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if loop is None:
            find_loop()
        ops[(loop or {}).get('iter_num')] += 1  # ops seen per iteration (no stack walk once train.py runs)
        if func in HOST_READ or func in DATA_SHAPED or (func in INDEXING and any(
                isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1] if i is not None)):
            record(str(func))
        return func(*args, **(kwargs or {}))


tolist = torch.Tensor.tolist
def watched_tolist(self):
    record('Tensor.tolist')
    return tolist(self)
torch.Tensor.tolist = watched_tolist

if '--device=cuda' in args:
    torch.cuda.set_sync_debug_mode('warn')
    warnings.simplefilter('always')
    show = warnings.showwarning
    def showwarning(message, category, filename, lineno, file=None, line=None):
        if 'synchroniz' in str(message):
            record('cuda sync: ' + str(message).splitlines()[0])
        else:
            show(message, category, filename, lineno, file, line)
    warnings.showwarning = showwarning

sys.argv = [train, *args]
code = 0
try:
    with Watch():
        runpy.run_path(train, run_name='__main__')
except SystemExit as e:
    code = e.code
with open(out, 'w') as f:
    json.dump({'records': records, 'ops': {k: v for k, v in ops.items() if k is not None}, 'exit': code}, f)
'''


def watched_run(tmp_path, train, args):
    """Run `train` (a train.py) watched; returns (host reads by iter_num, ops seen by iter_num)."""
    driver, out = tmp_path / 'driver.py', tmp_path / 'watch.json'
    driver.write_text(DRIVER)
    r = subprocess.run([sys.executable, str(driver), str(train), str(out), *args], cwd=REPO, env=train_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and out.exists(), r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res['exit'] in (0, None), r.stderr[-3000:]
    return res['records'], Counter({int(k): v for k, v in res['ops'].items()})


def check_no_sync(tmp_path, char_data, objective, device):
    args = [*TINY, f'--device={device}', '--num_threads=1', f'--data_dir={char_data}', f'--out_dir={tmp_path / "run"}',
            f'--max_iters={MAX_ITERS}', f'--log_interval={LOG}', '--eval_interval=1000', *OBJECTIVES[objective]]
    records, ops = watched_run(tmp_path, REPO / 'train.py', args)
    assert all(ops[i] > 50 for i in CHECKED), f"the watch did not see the steps: {dict(ops)}"  # it can fail
    assert any(r['iter'] in ALLOWED for r in records), "no host read even at log intervals: the watch is blind"
    inside = [r for r in records if r['iter'] in CHECKED]
    assert not inside, (f"{len(inside)} host read(s) in the step outside log intervals, first: {inside[0]['what']} "
                        f"at iter {inside[0]['iter']}, train.py line {inside[0]['line']}:\n{inside[0]['stack']}")


@pytest.mark.parametrize('objective', list(OBJECTIVES))
def test_step_has_no_host_sync_between_log_intervals(tmp_path, char_data, objective):
    check_no_sync(tmp_path, char_data, objective, 'cpu')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('objective', list(OBJECTIVES))
def test_step_has_no_cuda_sync_between_log_intervals(tmp_path, char_data, objective):
    check_no_sync(tmp_path, char_data, objective, 'cuda')
