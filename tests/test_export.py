"""export.py: a trained run -> a Hugging Face model directory. A tiny sign-level encoder trained on CPU is exported
and loaded with transformers alone in a fresh interpreter whose cwd and sys.path exclude the repository (offline):
its logits equal model.Encoder's (rel. err <= 1e-5), its tokenizer gives our ids, docs/export.md's restoration snippet
runs as written and ranks the candidates as sample.py does. The other branches of the architecture (learned
positions, LayerNorm, SwiGLU / GELU, biases, a window) are checked in-process on random weights; an arch='hf' run goes
through save_pretrained; bad destinations and archs are refused with one line and leave nothing behind."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, run_train, train_env

transformers = pytest.importorskip('transformers')

import export  # noqa: E402
from model import Encoder, ModelConfig  # noqa: E402

FIX = Path(__file__).parent / 'fixtures' / 'akkadian'
NAME = 'akkadian-restorer'                 # the folder name docs/export.md's snippet loads
LINE = export.AKKADIAN_LINE                # docs/export.md's line: "to [the king] my lord", the fixture's first line
# the encoder as config/train_akkadian_cpu.py shapes it, smaller, with d_kv != n_embd / n_head and a rope base of its own
ENCODER = ['--arch=encoder', '--n_layer=2', '--n_head=2', '--n_embd=32', '--d_kv=12', '--d_ff=40', '--norm=rmsnorm',
           '--mlp=geglu', '--pos=rope', '--rope_base=300.0', '--bias=False', '--doc_mask=True', '--mask_rate=0.3',
           '--learning_rate=1e-2', '--dropout=0.1']


def akkadian_data(d):
    """A sign-level dataset from the fixture ATF (12 copies of its first text, so that it splits)."""
    from atf import parse_atf
    from prepare.akkadian import build_dataset
    text = (FIX / 'sample.atf').read_text(encoding='utf-8')
    body = text.split('&P100002')[0].split('\n', 1)[1]
    build_dataset(parse_atf(''.join(f'&P{k:06d} = copy {k}\n{body}' for k in range(12))), d, seed=1337, source='input')
    return d


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A trained tiny encoder run (40 steps) and its data."""
    d = tmp_path_factory.mktemp('export')
    data = akkadian_data(d / 'data')
    out = d / 'run'
    run_train([*ENCODER, f'--data_dir={data}', '--dataset=akkadian', f'--out_dir={out}', '--max_iters=40',
               '--eval_interval=20'])
    return out, data


def fresh_env(tmp):
    """No repository on the path, no network, the remote-code module cache in tmp."""
    env = {k: v for k, v in train_env().items() if not k.startswith(('PYTHON', 'HF_', 'TRANSFORMERS_'))}
    env.update(HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', HF_HOME=str(tmp / 'hf_home'))
    return env


def run_fresh(script, tmp, *args):
    """python -I script (isolated: no PYTHON* variables, no user site; sys.path[0] is the script's folder) in tmp."""
    path = tmp / 'script.py'
    path.write_text(script, encoding='utf-8')
    r = subprocess.run([sys.executable, '-I', str(path), *map(str, args)], cwd=tmp, env=fresh_env(tmp),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


LOAD = """
import json, os, sys, torch
from transformers import AutoModelForMaskedLM, AutoTokenizer
repo = sys.argv[1]
assert not any(p.startswith(repo) for p in sys.path if p) and not os.getcwd().startswith(repo), sys.path
d, inputs, out = sys.argv[2], json.load(open(sys.argv[3])), sys.argv[4]
tok = AutoTokenizer.from_pretrained(d)                      # the plain call, without trust_remote_code
model = AutoModelForMaskedLM.from_pretrained(d, trust_remote_code=True)
x, doc = torch.tensor(inputs['x']), torch.tensor(inputs['doc'])
with torch.no_grad():
    res = {'training': model.training, 'logits': model(input_ids=x).logits,
           'logits_doc': model(input_ids=x, document_ids=doc).logits,
           'logits_pad': model(input_ids=x[:, :9], attention_mask=torch.tensor([[1] * 7 + [0] * 2] * len(x))).logits[:, :7],
           'ids': tok(inputs['line'])['input_ids'], 'special_ids': sorted(tok.all_special_ids),
           'config': model.config.to_dict(), 'decoded': tok.decode(tok(inputs['line'])['input_ids'])}
leaked = sorted(k for k, m in list(sys.modules.items()) if (getattr(m, '__file__', None) or '').startswith(repo))
assert not leaked, leaked
torch.save(res, out)
print('ok')
"""


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_export_loads_with_transformers_alone_and_reproduces_the_logits(run, tmp_path):
    from checkpoint import load_run
    from corpus import load_meta, load_tokenizer
    from restoration import read_fragments
    out, data = run
    dest = export.export(str(out), tmp_path / NAME)
    assert {'config.json', 'model.safetensors', 'modeling_nanolm.py', 'tokenizer.json', 'tokenizer_config.json',
            'README.md', export.MARKER} <= {p.name for p in dest.iterdir()}
    assert json.loads((dest / 'config.json').read_text())['auto_map']['AutoModelForMaskedLM'] == \
        'modeling_nanolm.NanoLMEncoderForMaskedLM'
    model, ckpt, _ = load_run(str(out))
    frags = read_fragments(data, 'train')
    x = torch.from_numpy(np.stack([np.resize(frags[k][0], 24) for k in range(3)]))   # 3 windows of 24 signs
    doc = torch.tensor([[0] * 10 + [1] * 14] * 3)
    signs = 'a na LUGAL be li2 ia ARAD ka'
    inputs = tmp_path / 'inputs.json'
    inputs.write_text(json.dumps({'x': x.tolist(), 'doc': doc.tolist(), 'line': signs}))
    assert run_fresh(LOAD, tmp_path, REPO, dest, inputs, tmp_path / 'res.pt').strip().endswith('ok')
    res = torch.load(tmp_path / 'res.pt', weights_only=True)
    with torch.no_grad():
        ours = model(x)[0]
        ours_doc = model(x, doc=doc)[0]
        ours_short = model(x[:, :7])[0]
    assert res['training'] is False
    assert rel_err(res['logits'], ours) <= 1e-5
    assert rel_err(res['logits_doc'], ours_doc) <= 1e-5
    assert rel_err(res['logits_pad'], ours_short) <= 1e-5        # padding keys are invisible
    assert rel_err(res['logits_doc'], ours) > 1e-3                # documents do change the logits
    tok = load_tokenizer(data)
    assert res['ids'] == tok.encode(signs) and 1 not in res['ids']   # our ids, no [UNK]
    assert res['decoded'] == signs
    meta = load_meta(data)
    assert res['special_ids'] == sorted(meta['special_ids'].values())
    c = res['config']
    assert (c['d_kv'], c['n_head'], c['n_embd'], c['d_ff'], c['rope_base'], c['rms_norm_eps']) == (12, 2, 32, 40, 300.0, 1e-6)


def readme_snippet():
    """The python block after <!-- export-snippet --> in the README or a docs/ page (docs/export.md): exactly one."""
    found = []
    for page in [REPO / 'README.md'] + sorted((REPO / 'docs').glob('*.md')):
        text = page.read_text(encoding='utf-8')
        found += re.findall(r'<!-- export-snippet -->\s*```python\n(.*?)```', text, re.S)
    assert len(found) == 1, f'README.md and docs/*.md: {len(found)} ```python blocks after <!-- export-snippet -->, not 1'
    return found[0]


def test_readme_snippet_restores_as_sample_py(run, tmp_path):
    """The snippet of docs/export.md, exactly as written, on the exported tiny run (cwd holds the folder it names): its
    candidates for the gap are sample.py's (encoder alone) in the same order, with the same probabilities."""
    out, data = run
    snippet = readme_snippet()
    assert snippet.strip() == export.usage_snippet(NAME, LINE).strip()   # the model card shows the same code
    export.export(str(out), tmp_path / NAME)
    printed = [l.split() for l in run_fresh(snippet, tmp_path).strip().splitlines()]
    assert len(printed) == 5 and all(len(p) == 2 for p in printed), printed
    r = subprocess.run([sys.executable, 'sample.py', f'--out_dir={out}', f"--text={LINE.replace('[MASK]', 'x')}",
                        '--scorer=model', '--candidates=5', '--beam=5', '--json'], cwd=REPO, env=train_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    cands = json.loads(r.stdout)['gaps'][0]['candidates']
    ours = [(c['signs'][0], c['prob']) for c in cands]
    assert [float(p) for _, p in printed] == pytest.approx([p for _, p in ours], abs=1e-4)
    for k, ((s, p), (s2, p2)) in enumerate(zip(printed, ours)):   # the same order, except between exact-ish ties
        assert s == s2 or abs(p2 - dict(ours).get(s, -1)) < 1e-5, (k, printed, ours)


def perturbed_encoder(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(arch='encoder', vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=24, **kw)
    m = Encoder(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():   # norms' ones and zeros moved too, so every weight matters
            p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.mark.parametrize('kw', [
    dict(pos='learned', norm='layernorm', mlp='swiglu', bias=True),
    dict(pos='none', norm='layernorm', mlp='gelu', bias=False, d_kv=8, window=3),
    dict(pos='rope', norm='rmsnorm', mlp='geglu', bias=True, d_ff=30, rope_base=50.0),
    dict(pos='rope', norm='rmsnorm', mlp='geglu', canon=3),
])
def test_every_encoder_option_is_reproduced(kw, tmp_path):
    from modeling_nanolm import NanoLMEncoderForMaskedLM
    m = perturbed_encoder(**kw)
    meta = {'tokenizer': 'vocab', 'vocab': ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + [f's{i}' for i in range(35)],
            'n_specials': 5, 'special_ids': {s: i for i, s in enumerate(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'])}}
    export.export_encoder(m, {'model_args': m.cfg.to_dict()}, meta, tmp_path)
    hf = NanoLMEncoderForMaskedLM.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 40, (2, 16))
    with torch.no_grad():
        assert rel_err(hf(input_ids=x).logits, m(x)[0]) <= 1e-5
        if kw.get('canon'):   # documents and padding: the Canon layers' neighbours stop at both, as attention does
            doc = torch.tensor([[0] * 7 + [1] * 9] * 2)
            m.cfg.doc_mask = True
            assert rel_err(hf(input_ids=x, document_ids=doc).logits, m(x, doc=doc)[0]) <= 1e-5
            pad = torch.tensor([[1] * 11 + [0] * 5] * 2)
            assert rel_err(hf(input_ids=x, attention_mask=pad).logits[:, :11], m(x[:, :11])[0]) <= 1e-5


def test_target_checks_and_atomic_replace(run, tmp_path, capsys, monkeypatch):
    out, _ = run
    for bad, why in ((out / 'hf', "inside the run's out_dir"), (out, "inside the run's out_dir")):
        with pytest.raises(SystemExit):
            export.export(str(out), bad)
        assert why in capsys.readouterr().err
    busy = tmp_path / 'busy'
    busy.mkdir()
    (busy / 'notes.txt').write_text('mine')
    with pytest.raises(SystemExit):
        export.export(str(out), busy)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and '--overwrite=True' in err and (busy / 'notes.txt').exists()
    export.export(str(out), busy, replace=True)
    assert not (busy / 'notes.txt').exists() and (busy / 'config.json').exists()
    first = (busy / 'model.safetensors').stat().st_ino
    export.export(str(out), busy)   # a previous export is replaced without --overwrite
    assert (busy / 'model.safetensors').stat().st_ino != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ['busy']   # no temporary folder left beside it
    # a failure while writing leaves the previous export as it was and nothing else
    def disk_full(model, ckpt, meta, dest):
        (dest / 'model.safetensors').write_bytes(b'partial')
        raise OSError('disk full')
    monkeypatch.setattr(export, 'export_encoder', disk_full)
    with pytest.raises(OSError):
        export.export(str(out), busy)
    with pytest.raises(OSError):
        export.export(str(out), tmp_path / 'new' / 'deeper' / 'restorer')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['busy'] and (busy / 'model.safetensors').exists()
    assert not list(out.glob('*.tmp')) and not (out / 'hf').exists()


def test_other_archs_are_refused_with_one_line(char_data, tmp_path):
    out = tmp_path / 'gpt'
    run_train([f'--data_dir={char_data}', f'--out_dir={out}', '--max_iters=2', '--eval_interval=2'])
    r = subprocess.run([sys.executable, 'export.py', f'--out_dir={out}', f'--to={tmp_path / "x"}'], cwd=REPO,
                       env=train_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert "arch 'gpt' cannot be exported" in last and 'encoder' in last and 'hf' in last
    assert not (tmp_path / 'x').exists() and [p.name for p in tmp_path.iterdir()] == ['gpt']


def test_model_card_has_data_licence_config_and_eval_beside_baselines(run, tmp_path):
    from evaluate import run_eval
    from corpus import load_meta
    out, data = run
    run_dir = tmp_path / 'run'
    shutil.copytree(out, run_dir)
    res = run_eval(str(run_dir), n_spans=2, beam=2, max_gap_len=2, subset_size=2)
    dest = export.export(str(run_dir), tmp_path / NAME)
    card = (dest / 'README.md').read_text(encoding='utf-8')
    assert card.startswith('---\n') and 'pipeline_tag: fill-mask' in card
    assert load_meta(data)['licence'] in card
    assert '| d_kv | 12 |' in card and '| rope_base | 300.0 |' in card and '| mask_rate | 0.3 |' in card
    row = next(l for l in card.splitlines() if l.startswith('| test | top1 |'))
    header = next(l for l in card.splitlines() if l.startswith('| set | metric |'))
    cols = [c.strip() for c in header.strip('|').split('|')]
    cells = dict(zip(cols, [c.strip() for c in row.strip('|').split('|')]))
    assert cells['this model'] == export.fmt(res['test_top1'])
    assert cells['unigram'] == export.fmt(res['test_unigram_top1']) and cells['n-gram'] == export.fmt(res['test_ngram_top1'])
    assert export.usage_snippet(NAME, LINE) in card


def hf_run(tmp_path):
    from hf_encoder import build_tiny
    data = akkadian_data(tmp_path / 'data')
    build_tiny(tmp_path / 'base', data, vocab=60, d=32, layers=2, heads=2)
    out = tmp_path / 'hfrun'
    run_train(['--arch=hf', f'--init_from=hf:{tmp_path / "base"}', f'--data_dir={data}', '--dataset=akkadian',
               f'--out_dir={out}', '--doc_mask=True', '--max_iters=4', '--eval_interval=2', '--mask_rate=0.3'])
    shutil.rmtree(tmp_path / 'base')   # the checkpoint alone must be enough
    return out


def test_hf_run_exports_through_save_pretrained(tmp_path, monkeypatch):
    from checkpoint import load_run
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    out = hf_run(tmp_path)
    dest = export.export(str(out), tmp_path / 'hf-export')
    names = {p.name for p in dest.iterdir()}
    assert {'config.json', 'model.safetensors', 'tokenizer.json', 'sign_vocab.json', 'README.md'} <= names
    assert 'modeling_nanolm.py' not in names and 'auto_map' not in json.loads((dest / 'config.json').read_text())
    model, ckpt, _ = load_run(str(out))
    hf = transformers.AutoModelForMaskedLM.from_pretrained(dest).eval()   # transformers' own class, no remote code
    tok = transformers.AutoTokenizer.from_pretrained(dest)
    sv = json.loads((dest / 'sign_vocab.json').read_text(encoding='utf-8'))
    assert sv['pieces'] == ckpt['model_args']['sign_pieces']
    a, b = sv['signs'].index('a'), sv['signs'].index('LUGAL')
    assert tok(' a', add_special_tokens=False)['input_ids'] == sv['pieces'][a]
    ids, att, _, _ = model.rows(torch.tensor([[a, b, 4, a]]))
    with torch.no_grad():
        assert rel_err(hf(input_ids=ids, attention_mask=att).logits, model.hf(input_ids=ids, attention_mask=att).logits) <= 1e-5
