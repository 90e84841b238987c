"""
A trained run -> a Hugging Face model directory that transformers loads alone (docs/export.md):

    python export.py --out_dir=out-akkadian --to=akkadian-restorer [--ckpt_name=ckpt.pt] [--overwrite=True]

writes DIR/
    config.json, model.safetensors   the weights and the architecture
    modeling_nanolm.py               arch encoder: the model's code (config.json's auto_map names it), importing only
                                     torch and transformers: AutoModelForMaskedLM.from_pretrained(DIR, trust_remote_code=True)
    tokenizer.json, tokenizer_config.json, ...   HF tokenizers' WordLevel over the sign vocabulary, with our specials
                                     and ids: AutoTokenizer.from_pretrained(DIR) on a line of signs separated by spaces or
                                     hyphens gives the ids the run was trained on
    README.md                        the model card: data and licence (meta.json), config, eval.json beside its baselines
    nanolm_export.json               what was exported (run, checkpoint, iteration, weights): marks a previous export

An arch='encoder' run is exported with modeling_nanolm.py; an arch='hf' run (hf_encoder.py: a pretrained Hugging Face
masked LM fine-tuned on the signs) through the model's own save_pretrained, with its piece tokenizer and
sign_vocab.json (each sign's pieces and the piece-count prior hf_encoder.py scores signs with). Other archs are
refused with one line. The weights are the checkpoint's EMA when it has one (--use_ema=False: the raw ones).

The directory is built in a temporary folder beside --to and renamed into place. --to must not be inside the run's
out_dir, and an existing non-empty --to is replaced only when it is a previous export (or with --overwrite=True).
"""
import json
import os
import shutil
import tempfile
from pathlib import Path

from configurator import configure
from corpus import die

# ----------------------------------------------------------------------------- defaults
out_dir = ''                  # the training run
to = ''                       # the model directory to write
ckpt_name = 'ckpt.pt'         # ckpt.pt (best val) or last.pt
data_dir = ''                 # default: the data the run was trained on (its meta.json gives the vocabulary)
allow_other_data = False      # True: take the vocabulary from data_dir although it is not the run's data (same tokenizer)
use_ema = True                # the checkpoint's EMA weights when it has them; False: the raw weights
overwrite = False             # True: replace a non-empty --to that is not a previous export
# -----------------------------------------------------------------------------
EXPORTABLE = {'encoder': 'our modeling code (modeling_nanolm.py)', 'hf': "the model's own save_pretrained"}
MARKER = 'nanolm_export.json'
MODELING = Path(__file__).resolve().parent / 'modeling_nanolm.py'
BASELINES = ('restore', 'unigram', 'ngram', 'infinigram')   # evals/akkadian.py's scorers beside the model
EVAL_SETS = ('test', 'subset', 'val')
AKKADIAN_LINE = 'a-na [MASK] be-li2-ia'   # the card's example: "to [the king] my lord", a letter's opening


def check_target(dest, run_dir, overwrite=False):
    """Refuse (one line) a destination inside the run's out_dir, a file, or a non-empty folder that is not a
    previous export (unless overwrite)."""
    dest, run_dir = Path(dest).resolve(), Path(run_dir).resolve()
    if dest == run_dir or run_dir in dest.parents:
        die(f"--to={dest} is inside the run's out_dir {run_dir}: export.py never writes there; choose a folder outside it")
    if dest.exists() and not dest.is_dir():
        die(f"--to={dest} is a file; give a folder to create")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MARKER).is_file() and not overwrite:
        die(f"--to={dest} is a non-empty folder that is not a previous export; choose a new folder, or replace it "
            f"with --overwrite=True")


def sign_tokenizer(meta, block_size):
    """A transformers fast tokenizer over the data's whole-token vocabulary (HF tokenizers' WordLevel): NFC, split on
    whitespace and hyphens, every token its id in meta['vocab'], unknown ones [UNK]; the data's specials are special
    tokens (so all_special_ids are the ids a restoration never proposes), and no [CLS]/[SEP] are added (the
    model sees a line as the restorer does)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    itos = meta['vocab']
    t = Tokenizer(models.WordLevel({s: i for i, s in enumerate(itos)}, unk_token='[UNK]'))
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                               pre_tokenizers.Split('-', behavior='removed')])
    named = {'[PAD]': 'pad_token', '[UNK]': 'unk_token', '[CLS]': 'cls_token', '[SEP]': 'sep_token', '[MASK]': 'mask_token'}
    specials = meta.get('special_ids') or {}
    kw = {named[s]: s for s in specials if s in named}
    extra = [s for s in specials if s not in named]
    tok = PreTrainedTokenizerFast(tokenizer_object=t, model_max_length=block_size, model_input_names=['input_ids', 'attention_mask'],
                                  **kw, **({'additional_special_tokens': extra} if extra else {}))
    bad = {s: tok.convert_tokens_to_ids(s) for s, i in specials.items() if tok.convert_tokens_to_ids(s) != i}
    if bad:
        raise RuntimeError(f"special tokens got other ids than the data's: {bad}")
    return tok


def export_encoder(model, ckpt, meta, dest):
    """model.Encoder -> modeling_nanolm's NanoLMEncoderForMaskedLM (the same state dict) + the sign tokenizer."""
    from model import ModelConfig, RMSNorm
    from modeling_nanolm import NanoLMEncoderConfig, NanoLMEncoderForMaskedLM
    if meta.get('tokenizer') != 'vocab':
        die(f"export.py writes a word-level tokenizer over a whole-token vocabulary (meta.json tokenizer 'vocab', e.g. "
            f"data/akkadian); this run's data has tokenizer {meta.get('tokenizer')!r}")
    c = ModelConfig.from_dict(ckpt['model_args'])
    sp = meta.get('special_ids') or {}
    rms_eps = next((m.eps for m in model.modules() if isinstance(m, RMSNorm)), 1e-6)
    cfg = NanoLMEncoderConfig(vocab_size=c.vocab_size, block_size=c.block_size, n_layer=c.n_layer, n_head=c.n_head,
                              n_embd=c.n_embd, d_kv=c.head_dim, d_ff=c.ff_dim, bias=c.bias, norm=c.norm, mlp=c.mlp,
                              pos=c.pos, rope_base=c.rope_base, window=c.window, dropout=c.dropout, canon=c.canon,
                              rms_norm_eps=rms_eps, layer_norm_eps=model.head[2].eps,
                              pad_token_id=sp.get('[PAD]'), mask_token_id=sp.get('[MASK]'))
    hf = NanoLMEncoderForMaskedLM(cfg)
    hf.load_state_dict(model.state_dict(), strict=True)   # the same keys: trunk.*, head.*
    hf.save_pretrained(dest)                               # config.json + auto_map, model.safetensors, modeling_nanolm.py
    if not (dest / MODELING.name).is_file():              # (save_pretrained copies the code of auto-registered classes)
        shutil.copy(MODELING, dest / MODELING.name)
    sign_tokenizer(meta, c.block_size).save_pretrained(dest)


def export_hf(model, ckpt, meta, dest):
    """hf_encoder.HFSignEncoder -> its Hugging Face masked LM (save_pretrained), its piece tokenizer, and
    sign_vocab.json: the sign vocabulary, each sign's piece ids and the train split's piece-count prior."""
    from hf_encoder import hf_tokenizer_of
    ma = ckpt['model_args']
    model.hf.save_pretrained(dest)
    hf_tokenizer_of(ma).save_pretrained(dest)
    sv = {'signs': meta['vocab'], 'n_specials': ma['n_lead'], 'mask_sign': ma['mask_sign'], 'pieces': ma['sign_pieces'],
          'piece_count_logprior': ma.get('piece_count_logprior'), 'block_size_signs': ma['block_size']}
    (dest / 'sign_vocab.json').write_text(json.dumps(sv, ensure_ascii=False), encoding='utf-8')


def fmt(v):
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else (f'{v:.4g}' if isinstance(v, float) else repr(v))


def eval_tables(res):
    """eval.json as markdown: one row per (eval set, metric), the model's number beside its baselines
    (evals/akkadian.py's keys {set}_{metric} and {set}_{baseline}_{metric}); the other numbers as a list."""
    rows, other = {}, []
    for k, v in res.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        s, _, rest = k.partition('_')
        if s not in EVAL_SETS or not rest:
            other.append(f'- {k}: {fmt(v)}')
            continue
        col = next((b for b in BASELINES if rest.startswith(b + '_')), 'model')
        rows.setdefault((s, rest[len(col) + 1:] if col != 'model' else rest), {})[col] = v
    cols = ['model'] + [b for b in BASELINES if any(b in r for r in rows.values())]
    names = {'model': 'this model', 'restore': 'restore (product)', 'ngram': 'n-gram', 'infinigram': 'infini-gram',
             'unigram': 'unigram'}
    lines = ['| set | metric | ' + ' | '.join(names[c] for c in cols) + ' |', '|---|---|' + '---:|' * len(cols)]
    for (s, m), r in rows.items():
        lines.append(f'| {s} | {m} | ' + ' | '.join(fmt(r[c]) if c in r else '' for c in cols) + ' |')
    return '\n'.join(lines), other


def usage_snippet(model_id, line):
    """The restoration snippet of docs/export.md (tests/test_export.py runs it), for this model."""
    return f"""import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer
model_id = {model_id!r}   # this folder, or its id on the Hub
tok = AutoTokenizer.from_pretrained(model_id, trust_remote_code=True)   # (it reads config.json too)
model = AutoModelForMaskedLM.from_pretrained(model_id, trust_remote_code=True).eval()
enc = tok({line!r}, return_tensors='pt')   # signs split by spaces or hyphens, the lost one [MASK]
with torch.no_grad():
    logits = model(**enc).logits[0]
gap = int((enc.input_ids[0] == tok.mask_token_id).nonzero()[0, 0])
logits[gap, tok.all_special_ids] = float('-inf')   # propose real signs only
probs = logits[gap].softmax(-1)
for p, i in zip(*probs.topk(5)):
    print(tok.convert_ids_to_tokens(int(i)), round(float(p), 4))"""


def model_card(dest, run_dir, ckpt_file, model, ckpt, meta, res):
    """README.md of the model directory: what it is, how to use it, the data and its licence, the config, and
    the run's eval.json (res, or None) beside its baselines."""
    ma, cfg = ckpt['model_args'], ckpt['config']
    arch = ma['arch']
    name = dest.name
    akk = meta.get('dataset') == 'akkadian'
    front = ['---', 'library_name: transformers', 'pipeline_tag: fill-mask', 'license: other',
             'tags:', '- masked-lm', '- nanolm-lab'] + (['- custom_code'] if arch == 'encoder' else []) \
        + (['- akkadian', '- cuneiform', 'language:', '- akk'] if akk else []) + ['---', '']
    what = ('A sign-level masked LM that restores damaged Akkadian cuneiform lines' if akk else
            f"A masked LM over the whole-token vocabulary of the {meta.get('dataset', '?')} data")
    body = [f'# {name}', '',
            f"{what}, trained with nanoLM-lab's `train.py` (arch `{arch}`: "
            + ('a bidirectional RoPE encoder, pre-norm RMSNorm, GeGLU, tied MLP head, the Aeneas torso' if arch == 'encoder'
               else f"the pretrained masked LM `{ma.get('hf_source')}` fine-tuned over the signs, whole-sign masking")
            + f"). Exported by `export.py` from the run `{Path(run_dir).name}`, checkpoint `{ckpt_file}` at "
            f"iteration {ckpt['iter_num']} (best val loss {ckpt['best_val_loss']:.4f}), {ckpt['weights']} weights.", '']
    if arch == 'encoder':
        line = AKKADIAN_LINE if akk else ' '.join(['[MASK]'] + meta['vocab'][meta['n_specials']:][:4])
        body += ['## Use', '', 'With transformers alone (the model code is `modeling_nanolm.py` in this folder, hence '
                 '`trust_remote_code=True`). A line is given as its signs, normalised as the training data '
                 '(`meta.json` normalization: ša₂ -> ša2, lí -> li2, {d}, ...), separated by spaces or hyphens; the '
                 'tokenizer adds no special tokens. Restoring one lost sign:', '', '```python',
                 usage_snippet(name, line), '```', '',
                 'Several [MASK]s are scored independently in one pass; the toolkit\'s `sample.py` fills a longer gap '
                 'jointly by beam search. `model(..., document_ids=...)` keeps attention inside documents, as training '
                 'did with doc_mask; a single line needs none.', '']
    else:
        body += ['## Use', '', 'A standard transformers masked LM over the pretrained tokenizer\'s pieces '
                 '(`AutoModelForMaskedLM.from_pretrained(DIR)`, no remote code). The toolkit scores a sign by its '
                 'pieces: `sign_vocab.json` holds each sign\'s piece ids and the train split\'s piece-count prior '
                 '(hf_encoder.py: log p(c) = log P(k_c) + sum_j log p(piece_j(c)) normalised within each piece count k).', '']
    body += ['## Data', '', f"- dataset: `{meta.get('dataset', '?')}` (source: {meta.get('source', '?')})",
             f"- licence: {meta.get('licence', 'not recorded in meta.json')}"]
    for s, c in (meta.get('counts') or {}).items():
        body.append(f"- {s}: {c.get('tokens', '?'):,} tokens, {c.get('documents', '?'):,} documents")
    if meta.get('documents'):
        body.append(f"- documents: {meta['documents']}")
    body += ['', 'The licence above is the data\'s; check it before you redistribute these weights.', '',
             '## Config', '', '| key | value |', '|---|---|']
    shown = [k for k in ('arch', 'n_layer', 'n_head', 'n_embd', 'd_kv', 'd_ff', 'norm', 'mlp', 'pos', 'rope_base',
                         'bias', 'dropout', 'window', 'block_size', 'vocab_size', 'doc_mask', 'hf_source') if k in ma]
    body += [f'| {k} | {ma[k]} |' for k in shown]
    body.append(f'| parameters | {model.num_params():,} |')
    train_keys = ('mask_rate', 'mask_rate_max', 'mask_replace', 'mask_random', 'span_mean', 'batch_size',
                  'gradient_accumulation_steps', 'max_iters', 'learning_rate', 'min_lr', 'warmup_iters', 'weight_decay',
                  'beta1', 'beta2', 'grad_clip', 'ema_decay', 'seed')
    body += [f'| {k} | {cfg[k]} |' for k in train_keys if k in cfg]
    body += ['', '## Evaluation', '']
    if res is None:
        body += ['No eval.json in the run (python evaluate.py --out_dir=RUN writes it).']
    else:
        table, other = eval_tables(res)
        if res.get('iter') is not None and res.get('iter') != ckpt['iter_num']:
            body += [f"Note: these numbers were measured at iteration {res['iter']}; the exported weights are of "
                     f"iteration {ckpt['iter_num']}.", '']
        body += ["`evaluate.py` on the held-out splits (eval.json), each number beside the baselines fit on the train "
                 "split alone (unigram, bidirectional n-gram, infini-gram) and the product scorer the toolkit restores "
                 "with (evaluate.py's docstring defines every metric):", '', table, '']
        body += other
    return '\n'.join(front + body) + '\n'


def export(run_dir, dest, ckpt_file='ckpt.pt', data='', other_data=False, ema=True, replace=False):
    """Write the model directory of run_dir's checkpoint to dest (see the module docstring); returns dest."""
    from checkpoint import load_run
    from corpus import load_meta
    if not run_dir or not dest:
        die("give --out_dir=RUN (a training run) and --to=DIR (the model directory to write)")
    dest = Path(dest)
    check_target(dest, run_dir, replace)
    model, ckpt, data_dir = load_run(run_dir, ckpt_file, 'cpu', data, other_data, ema)
    arch = ckpt['model_args'].get('arch')
    if arch not in EXPORTABLE:
        die(f"a run of arch {arch!r} cannot be exported: export.py writes masked LMs for transformers' "
            f"AutoModelForMaskedLM, from runs of arch " + ' or '.join(f'{a} ({w})' for a, w in EXPORTABLE.items()))
    meta = load_meta(data_dir)
    eval_file = Path(run_dir) / 'eval.json'
    res = json.loads(eval_file.read_text()) if eval_file.exists() else None
    made = [p for p in reversed(dest.parents) if not p.exists()]   # folders created for --to, removed on failure
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f'.{dest.name}.', suffix='.tmp'))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the export is an ordinary folder
    old = None
    try:
        (export_encoder if arch == 'encoder' else export_hf)(model, ckpt, meta, tmp)
        (tmp / 'README.md').write_text(model_card(dest, run_dir, ckpt_file, model, ckpt, meta, res), encoding='utf-8')
        (tmp / MARKER).write_text(json.dumps({'format': 1, 'arch': arch, 'run': Path(run_dir).name, 'checkpoint': ckpt_file,
                                              'iter': ckpt['iter_num'], 'weights': ckpt['weights'],
                                              'data_fingerprint': ckpt.get('data_fingerprint')}, indent=1))
        if dest.exists():  # a previous export (or --overwrite): moved aside, replaced, then deleted
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f'.{dest.name}.', suffix='.old'))
            os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not dest.exists() and (old / dest.name).exists():
            os.replace(old / dest.name, dest)
        for p in reversed(made):
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    files = sorted(p.name for p in dest.iterdir())
    print(f"wrote {dest}: {', '.join(files)} (arch {arch}, iter {ckpt['iter_num']}, {ckpt['weights']} weights)")
    return dest


if __name__ == '__main__':
    configure(globals())
    export(out_dir, to, ckpt_name, data_dir, allow_other_data, use_ema, overwrite)
