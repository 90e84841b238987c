"""
Training runs on disk: loading checkpoints safely, pretrained weights (--init_from=PATH, with the
Hugging Face backpack-gpt2 key map), the run directory's lock, atomic writes, metrics.jsonl,
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

from corpus import die, load_meta
from model import Backpack, build_model, ModelConfig

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
