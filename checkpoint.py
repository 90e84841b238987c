"""
Training runs on disk: loading checkpoints safely, the run directory's lock, atomic writes, metrics.jsonl,
and the fingerprint that ties a checkpoint to the dataset it was trained on.

    model, ckpt = load_checkpoint('out-akkadian/ckpt.pt')
    model, ckpt, data_dir = load_run('out-akkadian')       # + checks the data is the one it was trained on

Every load is `torch.load(..., weights_only=True)`: no code is ever unpickled, and a file that would need
it is refused with one line, never with advice to load it unsafely. A run records the fingerprint of its
data's meta.json (and tokenizer file); evaluate.py and sample.py refuse other data unless told
(--allow_other_data=True), and even then refuse a dataset whose tokenizer differs.
"""
import hashlib
import json
import os
import pickle
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from model import ModelConfig, build_model
from prepare.common import die, load_meta

CHECKPOINT_KEYS = ('model', 'model_args', 'config')
# meta.json keys that say what a token id means; the rest (counts, source, licence) describe the data
TOKENIZER_KEYS = ('tokenizer', 'vocab', 'specials', 'n_specials', 'vocab_size', 'special_ids', 'presegment')


# ----------------------------------------------------------------------------- loading

def torch_load(path, map_location='cpu'):
    """torch.load with weights_only=True; a missing, truncated, corrupt or unsafe file ends the program
    with one line that says what to do."""
    path = str(path)
    if not os.path.isfile(path):
        die(f"{path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        die(f"{path}: refused: not a checkpoint of this toolkit, or untrusted (it needs code or objects "
            f"that a weights-only load does not run)")
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        die(f"{path} is truncated or corrupt ({reason}); use the run's other checkpoint (ckpt.pt / last.pt) or train again")


def checked_checkpoint(path, map_location='cpu'):
    """A checkpoint of this toolkit: torch_load plus a check of its structure."""
    ckpt = torch_load(path, map_location)
    if not isinstance(ckpt, dict) or not all(k in ckpt for k in CHECKPOINT_KEYS) or not isinstance(ckpt['model'], dict):
        die(f"{path}: refused: not a checkpoint of this toolkit (it lacks {', '.join(CHECKPOINT_KEYS)})")
    return ckpt


def load_checkpoint(path, device='cpu', use_ema=True):
    """Load a checkpoint (weights_only, so no code is unpickled) and rebuild its model in eval mode.
    With use_ema (the default) and a checkpoint that holds an EMA of the weights (train.py's ema_decay > 0,
    ckpt['ema']), the model gets the EMA weights, cast to the parameters' dtype; else the raw weights.
    ckpt['weights'] says which: 'ema' or 'raw'. Returns (model, checkpoint dict)."""
    ckpt = checked_checkpoint(path, device)
    try:
        if ckpt['model_args'].get('arch') == 'hf':  # a Hugging Face masked LM over the signs, rebuilt offline
            from hf_encoder import build_hf
            model = build_hf(ckpt['model_args'])
        else:
            model = build_model(ModelConfig.from_dict(ckpt['model_args']))
        state = {k.removeprefix('_orig_mod.').removeprefix('module.'): v for k, v in ckpt['model'].items()}
        ckpt['weights'] = 'raw'
        if use_ema and ckpt.get('ema'):
            for k, v in ckpt['ema'].items():
                k = k.removeprefix('_orig_mod.').removeprefix('module.')
                if k not in state:
                    raise KeyError(f"EMA entry {k} is not a weight of the model")
                state[k] = v.to(state[k].dtype)
            ckpt['weights'] = 'ema'
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        die(f"{path}: the weights do not fit the model its model_args describe "
            f"({(str(e).splitlines() or [''])[0][:120]}): not a checkpoint of this version of the toolkit")
    return model.to(device).eval(), ckpt


def load_run(out_dir, ckpt_name='ckpt.pt', device='cpu', data_dir='', allow_other_data=False, use_ema=True):
    """(model, checkpoint, data_dir) of a training run: its checkpoint, and the data it was trained on
    unless data_dir is given, which must then be that data (see check_data); ckpt['own_data'] says whether
    it is. The weights are the EMA ones when the checkpoint has them and use_ema (see load_checkpoint);
    one line says which were loaded. A missing checkpoint ends the program with one line saying what to do."""
    path = os.path.join(out_dir, ckpt_name)
    if not os.path.exists(path):
        die(f"{path} not found: train first (python train.py config/...) or pass --out_dir of a training run")
    model, ckpt = load_checkpoint(path, device, use_ema)
    if ckpt['weights'] == 'ema':
        print(f"weights: EMA (decay {ckpt['config'].get('ema_decay')}) of {path}; --use_ema=False for the raw weights",
              file=sys.stderr)
    else:
        print(f"weights: raw of {path}" + (" (it holds an EMA: --use_ema=True uses it)" if ckpt.get('ema') else
                                          " (it holds no EMA)"), file=sys.stderr)
    cfg = ckpt['config']
    data_dir = data_dir or cfg.get('data_dir') or os.path.join('data', cfg['dataset'])
    ckpt['own_data'] = check_data(ckpt, data_dir, allow_other_data, path)
    return model, ckpt, data_dir


# ----------------------------------------------------------------------------- the data a run was trained on

def _sha(parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def data_fingerprints(data_dir):
    """{'data': ..., 'tokenizer': ...}: sha256 of the dataset's meta.json (its counts per split change with
    the data) and of the parts of it that define the token ids, each with the tokenizer file it names."""
    meta = load_meta(data_dir)
    tok_file = b''
    if meta.get('tokenizer_file'):
        p = Path(data_dir) / meta['tokenizer_file']
        tok_file = p.read_bytes() if p.exists() else b''
    tok = {k: meta[k] for k in TOKENIZER_KEYS if k in meta}
    return {'data': _sha([meta, tok_file]), 'tokenizer': _sha([tok, tok_file])}


def check_data(ckpt, data_dir, allow_other_data=False, what='the checkpoint'):
    """End the program when data_dir is not the data the checkpoint was trained on (unless allow_other_data),
    or, whatever allow_other_data says, when its tokenizer differs (the ids would mean other tokens).
    Returns whether data_dir is the training data (for a run of an older version: unknown, taken as yes)."""
    want = ckpt.get('data_fingerprint')
    trained_on = ckpt['config'].get('data_dir') or os.path.join('data', ckpt['config'].get('dataset', '?'))
    got = data_fingerprints(data_dir)
    if want is None:  # a run of an older version: only the vocabulary size can be checked
        vocab = load_meta(data_dir)['vocab_size']
        if vocab > ckpt['model_args']['vocab_size']:
            die(f"{data_dir} has {vocab} token ids, more than the {ckpt['model_args']['vocab_size']} of {what}: "
                f"not the data it was trained on ({trained_on})")
        return True
    if got['tokenizer'] != want['tokenizer']:
        die(f"{data_dir} has another tokenizer than the data {what} was trained on ({trained_on}): its token ids "
            f"would mean other things; pass --data_dir={trained_on} (or rebuild that data as it was)")
    if got['data'] != want['data'] and not allow_other_data:
        die(f"{data_dir} is not the data {what} was trained on ({trained_on}; meta.json differs): pass that data, "
            f"or --allow_other_data=True to use other data with the same tokenizer")
    return got['data'] == want['data']


# ----------------------------------------------------------------------------- writing a run

def save_atomic(obj, path):
    """torch.save to a unique temporary file beside path, then rename: a reader (or a kill) never sees a
    partial file, and two processes never share a temporary name."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path, text):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def lock_run_dir(out):
    """Take the run directory's lock (out/.lock, flock: the kernel releases it when the process dies, even
    by kill -9) and remove temporary files a killed writer left. Returns the open lock file: keep it for the
    run's lifetime. A second training run in the same out_dir ends with one line."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / '.lock', 'a+')
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return f
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or '?'
        f.close()
        die(f"{out} is in use by another training run (pid {pid}): wait for it to finish, or choose another --out_dir")
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    for tmp in out.glob('.*.tmp'):  # we hold the lock: no live writer owns these
        tmp.unlink()
    return f


def read_metrics(path, warn=True):
    """The rows of a metrics.jsonl. A last line without its newline is what a killed writer leaves: it is
    skipped (with a warning) if it does not parse. A bad line elsewhere ends the program with one line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding='utf-8').split('\n')
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # no newline after it: an interrupted write
                if warn:
                    print(f"warning: {path}: skipped its last line, cut short by an interrupted write", file=sys.stderr)
                continue
            die(f"{path}: line {i + 1} is not JSON; repair or delete that line")
    return rows
