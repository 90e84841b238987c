"""
Training runs on disk: loading checkpoints safely, pretrained weights (--init_from=PATH, with the
Hugging Face backpack-gpt2 key map), the run directory's lock, atomic writes, metrics.jsonl,
and the fingerprint that ties a checkpoint to the dataset it was trained on.

    model, ckpt = load_checkpoint('out-akkadian/ckpt.pt')
    model, ckpt, data_dir = load_run('out-akkadian')       # + checks the data is the one it was trained on

Every load is `torch.load(..., weights_only=True)`: no code is ever unpickled, and a file that would need
it is refused with one line, never with advice to load it unsafely. The device is checked before any load
(check_device), and the shapes a checkpoint's model_args describe are checked against sane bounds and against
its weights on the meta device before anything is allocated (model_config, check_model_shapes). A run records the fingerprint
of its data's meta.json (and tokenizer file); evaluate.py and sample.py refuse other data unless told
(--allow_other_data=True), and even then refuse a dataset whose tokenizer differs.

The run folder (docs/reliability.md) is owned by claim_run_dir: the lock is taken before anything in it is
looked at, a finished run is never replaced unless asked, and only the toolkit's own run files are ever deleted;
check_train_options refuses the values of train.py's options a run cannot use, resume_config decides what a
resumed run may change, and restore_training_state / rng_state / drop_metrics_after carry the rest of a run's
state across a resume; StopRequest handles SIGTERM / SIGINT.
"""
import atexit
import hashlib
import json
import math
import os
import pickle
import random
import re
import shutil
import signal
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from corpus import check_dataset, die, excerpt, load_meta, loads_json
from model import Backpack, build_model, ModelConfig, MODELS

CHECKPOINT_KEYS = ('model', 'model_args', 'config')
# meta.json keys that say what a token id means; the rest (counts, source, licence) describe the data
TOKENIZER_KEYS = ('tokenizer', 'vocab', 'specials', 'n_specials', 'vocab_size', 'special_ids', 'presegment')


# ----------------------------------------------------------------------------- loading

def check_device(device):
    """The device a script was given, checked against this machine before anything is loaded onto it: 'auto' ->
    cuda, mps or cpu (the first available); cpu, cuda, cuda:N, mps when this machine has them. Anything else
    ends the program with one line (never later as a 'corrupt checkpoint'). Returns the device."""
    if not isinstance(device, str) or not (device in ('auto', 'cpu', 'cuda', 'mps') or re.fullmatch(r'cuda:\d+', device)):
        die(f"unknown device {excerpt(device)}; choose auto, cpu, cuda, cuda:N or mps")
    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else ('mps' if torch.backends.mps.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        die(f"device={device} but this PyTorch has no usable CUDA device (build {torch.__version__}); use --device=cpu, "
            f"or install the CUDA build (README, GPU)")
    if device.startswith('cuda:') and int(device[5:]) >= torch.cuda.device_count():
        die(f"device={device} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    if device == 'mps' and not torch.backends.mps.is_available():
        die("device=mps but MPS is not available on this machine; use --device=cpu")
    return device


def torch_load(path, map_location='cpu'):
    """torch.load with weights_only=True; a missing, truncated, corrupt or unsafe file ends the program
    with one line that says what to do (the device is checked first: a bad one is not a corrupt file)."""
    path = str(path)
    check_device(str(map_location))
    if not os.path.isfile(path):
        die(f"{path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        die(f"{path}: refused: not a checkpoint of this toolkit, or untrusted (it needs code or objects "
            f"that a weights-only load does not run)")
    except Exception as e:  # RuntimeError, EOFError, BadZipFile, ... and IndexError / KeyError of a text file's bytes
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        die(f"{path} is truncated or corrupt ({reason}); use the run's other checkpoint (ckpt.pt / last.pt) or train again")


def checked_checkpoint(path, map_location='cpu'):
    """A checkpoint of this toolkit: torch_load plus a check of its structure."""
    ckpt = torch_load(path, map_location)
    if not isinstance(ckpt, dict) or not all(k in ckpt for k in CHECKPOINT_KEYS) or not isinstance(ckpt['model'], dict):
        die(f"{path}: refused: not a checkpoint of this toolkit (it lacks {', '.join(CHECKPOINT_KEYS)})")
    return ckpt


# Sane bounds on a model's sizes, checked before anything is built (a checkpoint or config claiming
# n_layer=10**6 would otherwise allocate gigabytes before failing). Far above any model this toolkit trains.
MODEL_LIMITS = {'n_layer': 1024, 'n_head': 1024, 'n_embd': 65536, 'd_kv': 65536, 'd_ff': 1 << 20,
                'block_size': 1 << 20, 'vocab_size': 1 << 20, 'window': 1 << 20, 'cond_dim': 65536,
                'imp_n_layer': 1024, 'imp_n_embd': 65536, 'imp_n_head': 1024, 'n_senses': 4096,
                'mem_depth': 16, 'mem_key_dim': 65536, 'mem_hidden': 1 << 20, 'mem_poly': 16, 'mem_window': 65536,
                'mem_chunk': 1 << 20, 'mem_ns_steps': 100, 'mem_conv': 1024}


# ... and below (a size of 0 means "the default" where the field says so: d_kv, d_ff, window, mem_key_dim, mem_hidden)
MODEL_MINIMA = {'cond_dim': 1, 'imp_n_layer': 1, 'imp_n_embd': 1, 'imp_n_head': 1, 'n_senses': 1, 'mem_depth': 1,
                'mem_window': 1, 'mem_chunk': 1, 'mem_conv': 1, 'mem_poly': 0, 'd_kv': 0, 'd_ff': 0, 'window': 0,
                'mem_key_dim': 0, 'mem_hidden': 0, 'rope_base': 1e-9, 'mem_lr': 0, 'importance_weight': 0,
                'adaptive_strength': 0}
# string fields a model reads with == (an unknown value would silently pick the other branch)
MODEL_CHOICES = {'norm': ('layernorm', 'rmsnorm'), 'mlp': ('gelu', 'geglu', 'swiglu'),
                 'pos': ('learned', 'rope', 'none')}


def model_args_problem(model_args):
    """What makes model_args unbuildable (None when nothing): an unknown arch, a field of the wrong type, a size
    beyond MODEL_LIMITS or below MODEL_MINIMA, a value outside MODEL_CHOICES, curriculum_phases that are not two
    fractions. ModelConfig's own checks (divisibility, attention kinds) follow when it is built."""
    if not isinstance(model_args, dict):
        return f"model_args is a {type(model_args).__name__}, not a dict"
    arch = model_args.get('arch', 'gpt')
    if arch not in MODELS:
        return f"unknown arch {excerpt(arch)}"
    types = {f.name: type(f.default) for f in fields(ModelConfig)}
    for k, v in model_args.items():
        t = types.get(k)
        if t is None:
            continue
        ok = isinstance(v, t) and not (t is int and isinstance(v, bool)) or (t is float and isinstance(v, int)
                                                                            and not isinstance(v, bool))
        if not ok:
            return f"{k} must be a {t.__name__}, got {excerpt(v)}"
        if k in MODEL_LIMITS and v > MODEL_LIMITS[k]:
            return f"{k}={v} is beyond the sane bound of {MODEL_LIMITS[k]:,}"
        if k in MODEL_MINIMA and not v >= MODEL_MINIMA[k]:
            return f"{k} must be at least {MODEL_MINIMA[k]:g}" + (" (0 = the default)" if MODEL_MINIMA[k] == 0 else '') + \
                f", got {excerpt(v)}"
        if k in MODEL_CHOICES and v not in MODEL_CHOICES[k]:
            return f"unknown {k} {excerpt(v)}; choose {' or '.join(MODEL_CHOICES[k])}"
    phases = model_args.get('curriculum_phases', '0.3,0.7')
    try:
        a, b = (float(x) for x in str(phases).split(','))
        ok = 0 <= a <= b <= 1
    except ValueError:
        ok = False
    if not ok:
        return f"curriculum_phases must be two fractions a,b with 0 <= a <= b <= 1, got {excerpt(phases)}"
    return None


def new_model_args(config, meta, mask_id=None):
    """The model_args of a new run: ModelConfig's keys of train.py's config, with the data's vocabulary (or the larger
    vocab_size the config pads it to, e.g. 50304 for speed: the ids stay the data's) and, for diffusion, the [MASK]
    id (a token added to the vocabulary when the tokenizer has none: the vocabulary grows to hold it)."""
    model_args = {k: config[k] for k in ModelConfig().to_dict() if k in config}
    if config['vocab_size'] and config['vocab_size'] < meta['vocab_size']:
        die(f"vocab_size={config['vocab_size']} is smaller than the data's {meta['vocab_size']} ids; use 0 (the data's) "
            f"or more")
    model_args['vocab_size'] = config['vocab_size'] or meta['vocab_size']
    if mask_id is not None:
        model_args['mask_id'] = mask_id
        model_args['vocab_size'] = max(model_args['vocab_size'], mask_id + 1)
    return model_args


def model_config(model_args, what='the model'):
    """ModelConfig of model_args after model_args_problem; one line on any problem."""
    problem = model_args_problem(model_args)
    if problem:
        die(f"{what}: {problem}")
    try:
        return ModelConfig.from_dict(model_args)
    except (TypeError, ValueError) as e:
        die(f"{what}: {(str(e).splitlines() or [''])[0][:160]}")


def meta_shapes(build, what='the model'):
    """{name: shape} of the state dict of the module build() returns, built on the meta device: no memory is
    allocated for the weights, so a claimed size can be checked before it is built for real. A configuration
    that cannot be built ends the program with one line."""
    try:
        with torch.device('meta'):
            m = build()
    except (TypeError, ValueError, RuntimeError, KeyError, ZeroDivisionError, AssertionError) as e:
        die(f"{what}: its model options describe no model this toolkit can build "
            f"({(str(e).splitlines() or [type(e).__name__])[0][:120]})")
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def state_mismatch(want, state):
    """How a state dict differs from the shapes a model expects (None when it fits)."""
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    bad = [k for k in want if k in state and tuple(state[k].shape) != want[k]]
    if bad:
        return f"{bad[0]} is {tuple(state[bad[0]].shape)} in the file, {want[bad[0]]} in the model"
    if missing:
        return f"{len(missing)} weights missing, e.g. {missing[0]}"
    if extra:
        return f"{len(extra)} unexpected weights, e.g. {extra[0]}"
    return None


def memory_bytes(device):
    """Total memory of the device (CPU: physical memory), or None when unknown."""
    try:
        if str(device).startswith('cuda'):
            return torch.cuda.get_device_properties(torch.device(device)).total_memory
        if device == 'cpu':
            return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None
    return None


def check_fits_memory(shapes, device, bytes_per_param, what):
    """End the program when the weights of `shapes` times bytes_per_param (4 to hold float32 weights; 16 to train
    them with AdamW: weights, gradients, two moments) exceed the device's whole memory: it could never run."""
    n = sum(int(torch.Size(s).numel()) for s in shapes.values())
    total = memory_bytes(device)
    if total and n * bytes_per_param > total:
        die(f"{what} has {n / 1e6:,.0f}M parameters: {n * bytes_per_param / 2**30:,.1f} GiB, more than the "
            f"{total / 2**30:,.1f} GiB of {device}; choose a smaller model")
    return n


def check_model_shapes(build, what, state=None, device='cpu', bytes_per_param=4):
    """Everything about a model that can be known before it is built: build() run on the meta device (meta_shapes),
    the shapes against a state dict's when one is given (state_mismatch), the size against the device's memory
    (check_fits_memory). One line on any problem; returns the shapes."""
    shapes = meta_shapes(build, what)
    if state is not None:
        problem = state_mismatch(shapes, {k.removeprefix('_orig_mod.').removeprefix('module.'): v for k, v in state.items()})
        if problem:
            die(f"{what}: the weights do not fit the model its model_args describe ({problem}): not a checkpoint of "
                f"this version of the toolkit")
    check_fits_memory(shapes, device, bytes_per_param, what)
    return shapes


def load_checkpoint(path, device='cpu', use_ema=True):
    """Load a checkpoint (weights_only, so no code is unpickled) and rebuild its model in eval mode.
    With use_ema (the default) and a checkpoint that holds an EMA of the weights (train.py's ema_decay > 0,
    ckpt['ema']), the model gets the EMA weights, cast to the parameters' dtype; else the raw weights.
    ckpt['weights'] says which: 'ema' or 'raw'. Its model_args are checked (sane sizes, and the shapes they
    describe equal to the weights', on the meta device) before the model is built. Returns (model, checkpoint dict)."""
    ckpt = checked_checkpoint(path, device)
    margs = ckpt['model_args']
    if not isinstance(margs, dict):
        die(f"{path}: refused: its model_args is not a dict; not a checkpoint of this toolkit")
    if margs.get('arch') == 'hf':  # a Hugging Face masked LM over the signs, rebuilt offline
        from hf_encoder import build_hf, check_hf_model_args
        check_hf_model_args(margs, path)
        build = lambda: build_hf(margs)
    else:
        cfg = model_config(margs, path)
        build = lambda: build_model(cfg)
    state = {k.removeprefix('_orig_mod.').removeprefix('module.'): v for k, v in ckpt['model'].items()}
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        die(f"{path}: refused: its weights are not all tensors; not a checkpoint of this toolkit")
    check_model_shapes(build, path, state, device, 4)
    try:
        model = build()
        ckpt['weights'] = 'raw'
        if use_ema and ckpt.get('ema'):
            for k, v in ckpt['ema'].items():
                k = k.removeprefix('_orig_mod.').removeprefix('module.')
                if k not in state:
                    raise KeyError(f"EMA entry {k} is not a weight of the model")
                state[k] = v.to(state[k].dtype)
            ckpt['weights'] = 'ema'
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError, KeyError, AttributeError) as e:
        die(f"{path}: the weights do not fit the model its model_args describe "
            f"({(str(e).splitlines() or [''])[0][:120]}): not a checkpoint of this version of the toolkit")
    return model.to(device).eval(), ckpt


def build_run_model(model_args, data_dir, meta, device, init_from='scratch', ckpt=None, path='last.pt', verbose=True):
    """The model a training run trains, on `device`, and its model_args: a resumed run's (ckpt, read from path) with
    its weights; a Hugging Face masked LM over the signs (arch 'hf', init_from 'hf:...': hf_encoder.py, whose
    model_args replace the given ones); else new, with the weights of a local state dict when init_from is a file.
    The model_args are checked (sane sizes; the shapes on the meta device against the weights and the device's
    memory at 16 bytes a parameter: weights, gradients, AdamW's two moments) before anything is allocated."""
    hf = model_args.get('arch') == 'hf'
    try:
        if hf:
            from hf_encoder import build_hf, check_hf_model_args, hf_model_args
            if ckpt is None:  # the pretrained config, tokenizer files and sign -> pieces table
                model_args = hf_model_args(init_from, data_dir, model_args['block_size'], model_args['doc_mask'])
            check_hf_model_args(model_args, path if ckpt is not None else init_from)
            model = build_hf(model_args, init_from if ckpt is None else None)
        else:
            what = 'the configuration' if ckpt is None else path
            cfg = model_config(model_args, what)
            check_model_shapes(lambda: build_model(cfg), what, ckpt and ckpt['model'], device, 16)
            model = build_model(cfg)
    except ValueError as e:
        die(str(e))
    if model_args.get('attention', 'standard') == 'agglutinative':
        if 'word_start' not in meta or 'token_class' not in meta:
            die(f"attention='agglutinative' needs meta.json 'word_start' and 'token_class' in {data_dir} "
                f"(prepare/turkish.py writes them)")
        model.set_token_tables(meta['word_start'], meta['token_class'])
    if ckpt is not None:
        model.load_state_dict(ckpt['model'])
    elif init_from not in ('scratch', 'resume') and not hf:  # pretrained weights; the optimizer starts fresh
        try:
            load_pretrained(model, torch_load(init_from), init_from)
        except ValueError as e:
            die(f"--init_from={init_from}: {e}")
        if verbose:
            print(f"initialised the weights from {init_from}")
    return model.to(device), model_args


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
    if not isinstance(cfg, dict):
        die(f"{path}: refused: its config is not a dict; not a checkpoint of this toolkit")
    data_dir = data_dir or cfg.get('data_dir') or os.path.join('data', str(cfg.get('dataset')))
    ckpt['own_data'] = check_data(ckpt, data_dir, allow_other_data, path)
    check_dataset(data_dir)
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

def _write_atomic(path, write, mode):
    """write(f) into a unique temporary file beside path, then rename: a reader (or a kill) never sees a partial
    file, and two processes never share a temporary name. A write that fails (a full disk: torch.save says
    'unexpected pos', open() ENOSPC) removes the temporary file, keeps the previous file and ends the program
    with one line."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    except OSError as e:
        die(f"cannot write in {path.parent} ({e.strerror}): check that it exists and is writable")
    try:
        with os.fdopen(fd, mode, **({'encoding': 'utf-8'} if 'b' not in mode else {})) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, (OSError, RuntimeError)):
            try:
                free = f"{shutil.disk_usage(path.parent).free / 2**20:,.0f} MiB free there"
            except OSError:
                free = 'free space unknown'
            reason = (str(e).strip().splitlines() or [type(e).__name__])[-1][:120]
            die(f"could not write {path} ({reason}; {free}): free disk space and run again"
                + (f"; the previous {path.name} is kept" if path.exists() else ''))
        raise


def save_atomic(obj, path):
    """torch.save, atomically (see _write_atomic)."""
    _write_atomic(path, lambda f: torch.save(obj, f), 'wb')


def write_text_atomic(path, text):
    _write_atomic(path, lambda f: f.write(text), 'w')


def nonfinite_weights(model):
    """Names of the parameters holding a NaN or an infinity (one host sync)."""
    params = [(n, p) for n, p in model.named_parameters()]
    if not params:
        return []
    ok = torch.stack([torch.isfinite(p.detach()).all() for _, p in params]).cpu().tolist()
    return [n for (n, _), good in zip(params, ok) if not good]


# ----------------------------------------------------------------------------- the run folder

# The files a training run (and the scripts reading it) write into its out_dir: the only ones ever deleted, by
# --overwrite=True. A folder's other content (a user's notes, interpret/ results) is never touched.
RUN_FILES = ('last.pt', 'ckpt.pt', 'init.pt', 'metrics.jsonl', 'eval.json', 'bench.json', 'artifacts_init.pt',
             'artifacts_final.pt', 'restore.json', 'senses.txt')
RUN_FILE_PATTERNS = ('eval_*.json', 'artifacts_*.pt')


def run_files(out):
    """The run files (RUN_FILES, RUN_FILE_PATTERNS) present in out, sorted."""
    out = Path(out)
    names = {n for n in RUN_FILES if (out / n).is_file()}
    for pat in RUN_FILE_PATTERNS:
        names.update(p.name for p in out.glob(pat) if p.is_file())
    return sorted(names)


def _remove_if_unused(out, lock, created):
    """At exit: the lock file of a process that wrote nothing in the folder (it failed before its first file) is
    removed, and the folder too when this process created it, so a refused run leaves nothing behind. (Removed
    while the lock is held: lock_run_dir checks that the file it locked is still the folder's.)"""
    try:
        if not run_files(out) and not list(out.glob('.*.tmp')):
            (out / '.lock').unlink()
            if created and not any(out.iterdir()):
                out.rmdir()
    except OSError:
        pass
    lock.close()


def claim_run_dir(out, init_from='scratch', overwrite=False):
    """The one place that owns a training run's folder, called before anything in it is looked at: takes the
    lock (lock_run_dir), then, holding it, checks what the folder holds. A folder holding a run (run_files) is
    refused unless it is resumed (init_from='resume', which needs last.pt) or overwrite=True, which deletes the
    run files and nothing else. When the run writes nothing (it fails first), the lock file it created is removed
    at exit, and the folder too if it created it. Returns the open lock file: keep it for the run's lifetime."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        die(f"{out} exists and is not a directory: choose another --out_dir")
    created = not out.exists()
    lock_is_new = not (out / '.lock').exists()
    lock = lock_run_dir(out)
    if lock_is_new:
        atexit.register(_remove_if_unused, out, lock, created)
    odd = [n for n in RUN_FILES if (out / n).exists() and not (out / n).is_file()]
    if odd:
        die(f"{out / odd[0]} is not a file, where a run writes one: choose another --out_dir")
    existing = run_files(out)
    if init_from == 'resume':
        if not (out / 'last.pt').exists():
            die(f"{out / 'last.pt'} not found: nothing to resume (train without --init_from=resume first)")
    elif existing and not overwrite:
        die(f"{out} already holds a training run ({', '.join(existing)}): continue it with --init_from=resume, "
            f"start over with --overwrite=True (deletes it), or choose another --out_dir")
    elif existing:
        for n in existing:
            (out / n).unlink()
        kept = sorted(p.name for p in out.iterdir() if p.name != '.lock')
        print(f"overwrite=True: deleted the previous run's {', '.join(existing)} in {out}"
              + (f" (kept what is not a run file: {', '.join(kept)})" if kept else ''))
    return lock


# ----------------------------------------------------------------------------- a run's options

def check_train_options(c):
    """The values train.py's options (the dict c) can hold but a run cannot use: one line each, before anything is
    built or written; run again on a resumed run's merged configuration."""
    init_from, arch = c['init_from'], c['arch']
    if init_from not in ('scratch', 'resume') and not os.path.isfile(init_from) and not init_from.startswith('hf:'):
        die(f"init_from must be 'scratch', 'resume' or the path of a local state dict; {init_from!r} is none of them")
    if arch not in MODELS and arch != 'hf':
        die(f"unknown arch {arch!r}; choose one of {', '.join(MODELS)}, or hf (a Hugging Face masked LM)")
    if (arch == 'hf') != init_from.startswith('hf:') and init_from != 'resume':
        die(f"arch='hf' and init_from='hf:MODEL' go together (got arch={arch!r}, init_from={init_from!r}): "
            f"e.g. python train.py config/finetune_hf_tiny_cpu.py")
    if c['batch_size'] != 'auto' and c['batch_size'] < 1:
        die(f"batch_size must be at least 1 (or 'auto'), got {c['batch_size']}")
    for k in ('block_size', 'gradient_accumulation_steps', 'eval_interval', 'eval_iters', 'log_interval'):
        if c[k] < 1:
            die(f"{k} must be at least 1, got {c[k]}")
    if c['max_iters'] < 1 and not c['eval_only']:
        die(f"max_iters={c['max_iters']}: nothing to train; set max_iters >= 1 (or eval_only=True to evaluate only)")
    if not 0 <= c['ema_decay'] < 1:
        die(f"ema_decay must be in [0, 1) (0 = no EMA; MDLM uses 0.9999), got {c['ema_decay']}")
    for k in ('learning_rate', 'min_lr', 'weight_decay', 'grad_clip', 'warmup_iters', 'lr_decay_iters', 'vocab_size',
              'bench_iters', 'bench_warmup', 'peak_tflops', 'num_threads', 'max_nonfinite', 'span_mean', 'mask_rate_max'):
        if c[k] < 0:
            die(f"{k} must not be negative, got {c[k]}")
    if c['learning_rate'] == 0:
        die("learning_rate=0 would train nothing; give a positive learning rate")
    for k in ('beta1', 'beta2', 'mask_replace', 'mask_random'):
        if not 0 <= c[k] <= 1:
            die(f"{k} must lie in [0, 1], got {c[k]}")
    if not 0 < c['mask_rate'] <= 1 or c['mask_rate_max'] > 1 or c['mask_replace'] + c['mask_random'] > 1:
        die(f"mask_rate must lie in (0, 1], mask_rate_max in [0, 1] and mask_replace + mask_random <= 1 "
            f"(got {c['mask_rate']}, {c['mask_rate_max']}, {c['mask_replace']} + {c['mask_random']})")
    layers = c['artifact_layers']
    if c['artifact_docs'] < 1 or not all(l.strip().isdigit() for l in layers.split(',') if l.strip()):
        die(f"artifact_docs must be at least 1 and artifact_layers a list of layers such as 0,4,8 "
            f"(got {c['artifact_docs']}, {layers!r})")
    if c['dtype'] not in ('auto', 'float32', 'bfloat16', 'float16'):
        die(f"unknown dtype {c['dtype']!r}; choose auto, float32, bfloat16 or float16")
    if not c['out_dir'].strip():
        die("out_dir is empty: name the run's folder, e.g. --out_dir=out-shakespeare-char")
    if c['seed'] < 0:
        die(f"seed must not be negative (numpy's generators refuse it), got {c['seed']}")
    check_device(c['device'])
    if c['overwrite'] and init_from == 'resume':
        die("overwrite=True and init_from='resume' contradict each other: resume continues the run, overwrite deletes it")


# ----------------------------------------------------------------------------- resuming a run

# What a resumed run may change (docs/reliability.md). Every other key is the run's: its model shape, objective,
# tokenizer and data order. Given explicitly with another value, it is refused; not given, the run's value is used.
RESUME_MAY_CHANGE = (
    'out_dir', 'init_from', 'overwrite', 'allow_other_data', 'eval_only', 'dataset', 'data_dir',   # this invocation
    'max_iters', 'learning_rate', 'decay_lr', 'warmup_iters', 'lr_decay_iters', 'min_lr',         # length, lr schedule
    'weight_decay', 'beta1', 'beta2', 'grad_clip', 'batch_size', 'gradient_accumulation_steps',   # optimisation
    'eval_interval', 'eval_iters', 'log_interval', 'max_nonfinite', 'ema_decay',                  # evaluation, guards
    'device', 'dtype', 'compile', 'num_threads', 'activation_checkpointing', 'attn_impl',         # the machine
    'bench_iters', 'bench_warmup', 'peak_tflops', 'save_artifacts', 'artifact_layers', 'artifact_docs')
RESUME_MAY_CHANGE_PREFIXES = ('wandb', 'tensorboard', 'tb_')  # logging backends: where the run reports, not what it is
# ... of which these describe this invocation or this machine: not given, they keep their defaults
RESUME_NOT_INHERITED = ('out_dir', 'init_from', 'overwrite', 'allow_other_data', 'eval_only', 'device', 'dtype',
                        'compile', 'num_threads', 'bench_iters', 'bench_warmup', 'peak_tflops')


def resume_config(config, given, saved, path='last.pt'):
    """The configuration of a resumed run: `config` (this invocation's, `given` the keys set by its config files
    and overrides) against `saved` (the checkpoint's). A key outside RESUME_MAY_CHANGE given with another value
    than the run's ends the program with one line naming every such key; a key not given takes the run's value
    (except RESUME_NOT_INHERITED). Keys the run does not have (newer than it) keep this invocation's value."""
    if not isinstance(saved, dict):
        die(f"{path}: refused: its config is not a dict; not a checkpoint of this toolkit")
    frozen = lambda k: k not in RESUME_MAY_CHANGE and not k.startswith(RESUME_MAY_CHANGE_PREFIXES)
    differ = [k for k in config if k in saved and k in given and frozen(k) and config[k] != saved[k]]
    if differ:
        shown = ', '.join(f"{k}={excerpt(saved[k], 30)} (not {excerpt(config[k], 30)})" for k in differ[:6])
        die(f"{path} was trained with {shown}{' ...' if len(differ) > 6 else ''}: resuming cannot change the model's "
            f"shape or objective; drop {', '.join('--' + k for k in differ)} (or give the run's values), or start a "
            f"new run in another --out_dir (what may change on resume: docs/reliability.md)")
    merged = dict(config)
    for k in config:
        if k in saved and k not in given and k not in RESUME_NOT_INHERITED:
            merged[k] = saved[k]
    return merged


def rng_state(device_type):
    """This process's RNG states (torch, CUDA, Python, numpy) as a checkpoint holds them (weights_only-loadable)."""
    s = np.random.get_state()
    return {'torch': torch.get_rng_state(), 'python': random.getstate(),
            'cuda': torch.cuda.get_rng_state_all() if device_type == 'cuda' else [],
            'numpy': [s[0], torch.from_numpy(s[1].astype(np.int64)), int(s[2]), int(s[3]), float(s[4])]}


def save_run(path, model, optimizer, scaler, ema, device_type, world=1, master=True, **state):
    """A training run's state -> path, atomically (save_atomic): the model's weights, the optimizer's and GradScaler's
    states, the RNG states of every process (gathered: a collective when world > 1, DDP), the EMA weights ({name:
    tensor}; left out when empty) and `state`: model_args, config, iter_num, best_val_loss, data_position, ... (the
    checkpoint contract: README, Layout). Only the master process writes; restore_training_state reads it back."""
    states = [rng_state(device_type)]
    if world > 1:
        import torch.distributed as dist
        states = [None] * world
        dist.all_gather_object(states, rng_state(device_type))
    if master:
        save_atomic({'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict(),
                     **state, 'rng': states, **({'ema': ema} if ema else {})}, path)


def restore_training_state(ckpt, optimizer, scaler, rank, device_type):
    """A resumed run's optimizer, GradScaler and RNG states (those of process `rank`, or of the last process saved
    when the run has more processes now), as train.py's save_checkpoint wrote them."""
    optimizer.load_state_dict(ckpt['optimizer'])
    if ckpt.get('scaler'):
        scaler.load_state_dict(ckpt['scaler'])
    rng = ckpt['rng'][min(rank, len(ckpt['rng']) - 1)]
    torch.set_rng_state(rng['torch'].cpu())
    if device_type == 'cuda' and rng.get('cuda'):
        torch.cuda.set_rng_state_all([s.cpu() for s in rng['cuda']])
    random.setstate(rng['python'])
    np.random.set_state((rng['numpy'][0], rng['numpy'][1].numpy().astype(np.uint32), *rng['numpy'][2:]))


def resume_ema(ckpt, params, device, what='last.pt', verbose=True):
    """The float32 EMA of the weights `params` ({name: parameter}) a run keeps beside its model (train.py ema_decay):
    the resumed run's (ckpt['ema']) when it holds one of these weights, else a copy of the weights (said in a line
    when a resumed run had none)."""
    saved = (ckpt or {}).get('ema')
    if params and saved is not None and set(saved) == set(params):
        return [saved[n].to(device=device, dtype=torch.float32).clone() for n in params]
    if params and ckpt is not None and verbose:
        print(f"{what} has no EMA of these weights; the EMA starts from the resumed weights")
    return [p.detach().to(torch.float32).clone() for p in params.values()]


def drop_metrics_after(path, iter_num):
    """A resumed run's metrics.jsonl loses the rows logged after the state it resumes from (iter > iter_num)."""
    if Path(path).exists():
        rows = [r for r in read_metrics(path) if r.get('iter', 0) <= iter_num]
        write_text_atomic(path, ''.join(json.dumps(r) + '\n' for r in rows))


# ----------------------------------------------------------------------------- stopping

class StopRequest:
    """SIGTERM / SIGINT during a run: the first asks the loop to stop at the end of the step (it saves last.pt and
    exits 143 / 130); a second stops at once, without saving, with one line and the same exit status (a file
    being written is removed by _write_atomic; the previous last.pt stays)."""

    def __init__(self):
        self.requested = None  # the name of the first signal ('SIGTERM', 'SIGINT'), or 'peer' (another DDP process)

    def install(self):
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum, frame):
        name = signal.Signals(signum).name
        if self.requested:
            print(f"\nerror: a second {name}: stopped at once, without saving; the last saved last.pt is kept "
                  f"(continue with --init_from=resume)", file=sys.stderr)
            raise SystemExit(128 + signum)
        self.requested = name

    def agree(self, device):
        """DDP: every process learns of a stop request any of them got (an all-reduce at a log interval), so that
        all of them stop at the same step; a request from another process is 'peer'."""
        import torch.distributed as dist
        flag = torch.tensor([1.0 if self.requested else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0 and not self.requested:
            self.requested = 'peer'

    @property
    def exit_status(self):
        """128 + the signal, as a shell reports a process stopped by it."""
        return {'SIGINT': 130}.get(self.requested, 143)


def lock_run_dir(out):
    """Take the run directory's lock (out/.lock, flock: the kernel releases it when the process dies, even
    by kill -9) and remove temporary files a killed writer left. Returns the open lock file: keep it for the
    run's lifetime. A second training run in the same out_dir ends with one line."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        f = open(out / '.lock', 'a+')
    except OSError as e:
        die(f"cannot use {out} as a run folder ({e.strerror}): choose another --out_dir")
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return f
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(f.fileno()).st_ino != os.stat(out / '.lock').st_ino:  # removed by its holder meanwhile
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
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


def append_metrics(path, row):
    """One row of a run's metrics.jsonl, strict JSON: a non-finite number is written as null (read_metrics reads it)."""
    row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
    with open(path, 'a') as f:
        f.write(json.dumps(row) + '\n')
    return row


def read_metrics(path, warn=True):
    """The rows of a metrics.jsonl. A last line without its newline is what a killed writer leaves: it is
    skipped (with a warning) if it does not parse. A bad line elsewhere ends the program with one line."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_bytes().decode('utf-8').split('\n')
    except (OSError, UnicodeDecodeError) as e:
        die(f"{path} is not readable as UTF-8 text ({str(e).splitlines()[0][:80]}); repair or delete it")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = loads_json(line)
            if not isinstance(row, dict):
                raise json.JSONDecodeError('not an object', line, 0)
            rows.append(row)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # no newline after it: an interrupted write
                if warn:
                    print(f"warning: {path}: skipped its last line, cut short by an interrupted write", file=sys.stderr)
                continue
            die(f"{path}: line {i + 1} is not a JSON object; repair or delete that line")
    return rows


# ----------------------------------------------------------------------------- pretrained weights (--init_from=PATH)
# Backpack: the Hugging Face stanfordnlp/backpack-gpt2 layout <-> ours.

def hf_backpack_key_map(n_layer):
    """{HF stanfordnlp/backpack-gpt2 key: (our key, transpose?)}; Conv1D weights are stored (in, out)."""
    m = {'backpack.gpt2_model.wte.weight': ('trunk.wte.weight', False),
         'backpack.gpt2_model.wpe.weight': ('trunk.wpe.weight', False),
         'backpack.gpt2_model.ln_f.weight': ('trunk.norm.weight', False),
         'backpack.gpt2_model.ln_f.bias': ('trunk.norm.bias', False),
         'backpack.sense_weight_net.c_attn.weight': ('sense_weights.weight', False),   # an nn.Linear in HF
         'backpack.sense_weight_net.c_attn.bias': ('sense_weights.bias', False)}
    for i in range(n_layer):
        a, b = f'backpack.gpt2_model.h.{i}.', f'trunk.blocks.{i}.'
        for hf, ours in (('ln_1', 'norm1'), ('ln_2', 'norm2')):
            m[a + hf + '.weight'], m[a + hf + '.bias'] = (b + ours + '.weight', False), (b + ours + '.bias', False)
        for hf, ours in (('attn.c_attn', 'attn.qkv'), ('attn.c_proj', 'attn.proj'), ('mlp.c_fc', 'mlp.fc'),
                         ('mlp.c_proj', 'mlp.proj')):
            m[a + hf + '.weight'], m[a + hf + '.bias'] = (b + ours + '.weight', True), (b + ours + '.bias', False)
    s = 'backpack.sense_network.'
    for hf, ours in (('ln', 'ln0'), ('block.ln_1', 'ln1'), ('block.ln_2', 'ln2')):
        m[s + hf + '.weight'], m[s + hf + '.bias'] = (f'sense_net.{ours}.weight', False), (f'sense_net.{ours}.bias', False)
    for hf, ours in (('block.mlp.c_fc', 'fc1'), ('block.mlp.c_proj', 'proj1'), ('final_mlp.c_fc', 'fc2'),
                     ('final_mlp.c_proj', 'proj2')):
        m[s + hf + '.weight'], m[s + hf + '.bias'] = (f'sense_net.{ours}.weight', True), (f'sense_net.{ours}.bias', False)
    return m


HF_BACKPACK_IGNORED = ('backpack.word_embeddings.weight', 'backpack.position_embeddings.weight', 'lm_head.weight')


def backpack_from_hf(state, n_layer=None):
    """Map a stanfordnlp/backpack-gpt2 state dict (HF layout) to ours. The aliases of the tied
    embeddings (word_embeddings, position_embeddings, lm_head) must equal wte/wpe; the attention
    buffers (attn.bias, attn.masked_bias) are skipped. Raises ValueError on missing or unknown keys."""
    if n_layer is None:
        n_layer = 1 + max(int(k.split('.')[3]) for k in state if k.startswith('backpack.gpt2_model.h.'))
    m = hf_backpack_key_map(n_layer)
    missing = sorted(set(m) - set(state))
    if missing:
        raise ValueError(f"{len(missing)} keys of the backpack-gpt2 layout are missing, e.g. {missing[:3]}")
    unknown = sorted(k for k in state if k not in m and k not in HF_BACKPACK_IGNORED
                     and not k.endswith(('.attn.bias', '.attn.masked_bias')))
    if unknown:
        raise ValueError(f"{len(unknown)} unknown keys, e.g. {unknown[:3]}: not a backpack-gpt2 state dict")
    out = {ours: (state[hf].t() if tr else state[hf]).contiguous() for hf, (ours, tr) in m.items()}
    for alias, ours in (('backpack.word_embeddings.weight', 'trunk.wte.weight'), ('lm_head.weight', 'trunk.wte.weight'),
                        ('backpack.position_embeddings.weight', 'trunk.wpe.weight')):
        if alias in state and not torch.equal(state[alias], out[ours]):
            raise ValueError(f"{alias} differs from the embedding it should be tied to")
    return out


def backpack_to_hf(state, n_layer):
    """Inverse of backpack_from_hf (our state dict -> the HF layout, tied aliases included)."""
    m = hf_backpack_key_map(n_layer)
    out = {hf: (state[ours].t() if tr else state[ours]).contiguous() for hf, (ours, tr) in m.items()}
    out['backpack.word_embeddings.weight'] = out['lm_head.weight'] = out['backpack.gpt2_model.wte.weight']
    out['backpack.position_embeddings.weight'] = out['backpack.gpt2_model.wpe.weight']
    return out


def backpack_config_from_hf(state):
    """ModelConfig keys implied by the shapes of a backpack-gpt2 state dict (n_head is not in the shapes)."""
    V, d = state['backpack.gpt2_model.wte.weight'].shape
    n_layer = 1 + max(int(k.split('.')[3]) for k in state if k.startswith('backpack.gpt2_model.h.'))
    kd = state['backpack.sense_network.final_mlp.c_proj.weight'].shape[1]
    return {'arch': 'backpack', 'vocab_size': V, 'n_embd': d, 'n_layer': n_layer, 'n_senses': kd // d,
            'block_size': state['backpack.gpt2_model.wpe.weight'].shape[0]}


def load_pretrained(model, state, path='the state dict'):
    """--init_from=PATH: a local torch state dict (loaded with weights_only by the caller), either ours or the
    backpack-gpt2 layout (mapped); the shapes must match the model's config. Raises ValueError otherwise."""
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    if isinstance(state, dict) and 'model' in state and isinstance(state['model'], dict):
        state = state['model']   # one of our checkpoints
    state = {k.removeprefix('_orig_mod.').removeprefix('module.'): v for k, v in state.items()}
    if any(k.startswith('backpack.') for k in state):
        if not isinstance(model, Backpack):
            raise ValueError(f"{path} holds backpack-gpt2 weights: use arch='backpack'")
        state = backpack_from_hf(state, model.cfg.n_layer)
    own = model.state_dict()
    bad = [k for k in own if k in state and state[k].shape != own[k].shape]
    if bad:
        raise ValueError(f"shape mismatch for {bad[0]}: {tuple(state[bad[0]].shape)} in {path} vs "
                         f"{tuple(own[bad[0]].shape)} in the model (set n_embd/n_layer/n_senses/vocab_size/block_size to match)")
    model.load_state_dict(state)
    return model
