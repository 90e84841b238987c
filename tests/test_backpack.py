"""Backpack LM: exact decomposition, non-contextual senses, causality, the gpt comparison,
the backpack-gpt2 key map, the EN-FR configs and the europarl alignment. Tiny models, CPU, no network."""
import math
import runpy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, run_train
from checkpoint import backpack_from_hf, backpack_to_hf, hf_backpack_key_map, load_pretrained, torch_load
from model import Backpack, build_model, ModelConfig
from objectives import objective

V, D, K, L = 40, 32, 4, 2


def tiny(arch='backpack', **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, vocab_size=V, block_size=16, n_layer=L, n_head=2, n_embd=D, n_senses=K, **kw)
    return build_model(cfg).double().eval()


def test_logits_are_exactly_E_sum_alpha_C():
    m = tiny()
    x = torch.randint(0, V, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _ = m(x, all_logits=True)
        alpha, C, _ = m.decompose(x)
        # recompute from the parts: each token's senses alone, then o_i = sum_j sum_l alpha_lij C(x_j)_l
        E = m.trunk.wte.weight
        Cs = torch.stack([m.sense_table(row) for row in x])
        # one row at a time vs the whole batch: other matmul shapes, so BLAS may round differently (float64:
        # differences of ~1e-17 are seen; a wrong sense table would differ by O(1e-2))
        assert torch.allclose(Cs, C, atol=1e-12, rtol=0)
        o = torch.zeros(2, 11, D, dtype=torch.float64)
        for b in range(2):
            for i in range(11):
                for j in range(i + 1):
                    for l in range(K):
                        o[b, i] += alpha[b, l, i, j] * Cs[b, j, l]
        ref = o @ E.T
    assert torch.allclose(logits, ref, atol=1e-10, rtol=0)
    # alpha: non-negative, zero above the diagonal, each sense normalised separately
    assert (alpha >= 0).all()
    assert torch.all(alpha.triu(1) == 0)
    assert torch.allclose(alpha.sum(-1), torch.ones(2, K, 11, dtype=torch.float64))


def test_alpha_is_scaled_by_inverse_sqrt_head_size():
    m = tiny()
    x = torch.randint(0, V, (1, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        h, _ = m.trunk(x)
        q, k = m.sense_weights(h)[0].split(D, dim=-1)
        q, k = q.view(7, K, D // K), k.view(7, K, D // K)
        scores = torch.einsum('ild,jld->lij', q, k) / math.sqrt(D // K)
        scores = scores.masked_fill(torch.ones(7, 7).triu(1).bool(), float('-inf'))
        alpha, _, _ = m.decompose(x)
    assert torch.allclose(alpha[0], scores.softmax(-1), atol=1e-12)


def test_senses_do_not_depend_on_context():
    m = tiny()
    a = torch.tensor([[5, 7, 9, 11, 13]])
    b = torch.tensor([[13, 2, 3, 5, 1, 4, 7, 8]])
    with torch.no_grad():
        _, Ca, _ = m.decompose(a)
        _, Cb, _ = m.decompose(b)
    for tok in (5, 7, 13):  # same id, other positions, other neighbours
        ia, ib = (a[0] == tok).nonzero()[0, 0], (b[0] == tok).nonzero()[0, 0]
        # two sequences of other lengths: other matmul shapes, so float64 rounding may differ (~1e-17);
        # a context-dependent sense vector would differ by far more than 1e-12
        assert torch.allclose(Ca[0, ia], Cb[0, ib], atol=1e-12, rtol=0)
    # the sense network never sees positions: its gradient wrt wpe is zero
    m.train(False)
    C = m.senses(a.repeat(1, 2))
    C.sum().backward()
    assert m.trunk.wpe.weight.grad is None or torch.all(m.trunk.wpe.weight.grad == 0)


def test_sense_network_runs_on_batch_tokens_only():
    m = tiny()
    seen = []
    m.sense_net.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    x = torch.tensor([[1, 2, 1, 2, 3, 3, 3, 1]])
    with torch.no_grad():
        m(x, x)
    assert seen == [torch.Size([3, D])]  # 3 distinct ids, never the vocabulary of 40


def test_causal():
    m = tiny()
    x = torch.randint(0, V, (1, 12), generator=torch.Generator().manual_seed(3))
    y = x.clone()
    y[0, 6:] = (y[0, 6:] + 1) % V
    with torch.no_grad():
        lx, _ = m(x, all_logits=True)
        ly, _ = m(y, all_logits=True)
    assert torch.allclose(lx[0, :6], ly[0, :6], atol=1e-12)
    assert not torch.allclose(lx[0, 6:], ly[0, 6:])


def test_sense_scale_intervention_is_exact():
    m = tiny()
    x = torch.randint(0, V, (1, 9), generator=torch.Generator().manual_seed(4))
    scale = torch.ones(1, 9, K, dtype=torch.float64)
    scale[0, 3, 1] = 0.0   # zero sense 1 of the token at position 3
    scale[0, 5, 2] = 2.5   # amplify sense 2 of the token at position 5
    with torch.no_grad():
        base, _ = m(x, all_logits=True)
        same, _ = m(x, all_logits=True, sense_scale=torch.ones(1, 9, K, dtype=torch.float64))
        got, _ = m(x, all_logits=True, sense_scale=scale)
        alpha, C, _ = m.decompose(x)
        ref = torch.einsum('blij,bjl,bjld->bid', alpha, scale, C) @ m.trunk.wte.weight.T  # eq. 15, delta_lj
    assert torch.allclose(base, same, atol=1e-12)
    assert torch.allclose(got, ref, atol=1e-10)
    assert torch.allclose(got[0, :3], base[0, :3], atol=1e-12)  # positions before the edited token are untouched


def test_backpack_and_gpt_differ_only_in_the_sense_machinery():
    assert objective('backpack') == 'causal'
    bp, gpt = tiny('backpack'), tiny('gpt')
    sb, sg = bp.state_dict(), gpt.state_dict()
    assert set(sg) <= set(sb)
    assert all(sb[k].shape == sg[k].shape for k in sg)
    extra = set(sb) - set(sg)
    assert extra and all(k.startswith(('sense_net.', 'sense_weights.')) for k in extra)
    n_extra = sum(sb[k].numel() for k in extra)
    assert bp.num_params() - gpt.num_params() == n_extra
    assert bp.num_params(True) - gpt.num_params(True) == n_extra  # wte/wpe are the same embedding
    # the sense net: d->4d->d block + d->4d->kd, three LayerNorms; the weight net d->2d
    d = D
    assert n_extra == (d * 4 * d + 4 * d + 4 * d * d + d) + (d * 4 * d + 4 * d + 4 * d * K * d + K * d) + 3 * 2 * d + (d * 2 * d + 2 * d)


def _load_config(name):
    return {k: v for k, v in runpy.run_path(str(REPO / 'config' / name)).items() if not k.startswith('__')}


@pytest.mark.parametrize('suffix', ['', '_cpu'])
def test_europarl_configs_differ_only_in_arch(suffix):
    """The backpack arm is named after its gpt base and sets only its arch and out_dir (16 senses: the default)."""
    b, t = _load_config(f'backpack_europarl{suffix}.py'), _load_config(f'gpt_europarl{suffix}.py')
    assert set(b) == {'arch', 'out_dir'} and b['out_dir'] != t['out_dir'], b
    assert b['arch'] == 'backpack' and t['arch'] == 'gpt' and 'n_senses' not in t
    assert ModelConfig().n_senses == 16
    if not suffix:  # the paper's Micro shape and the schedule (weight decay: train.py's 0.1)
        assert (t['block_size'], t['n_layer'], t['n_head'], t['n_embd'], t['dropout'], t['batch_size'],
                t['learning_rate'], t['max_iters'], t.get('weight_decay', 0.1), t['eval_interval']) == \
            (512, 6, 6, 384, 0.1, 32, 3e-4, 50000, 0.1, 500)


# ----------------------------------------------------------------------------- stanfordnlp/backpack-gpt2 layout

def synthetic_hf_state(n_layer=L, d=D, k=K, vocab=V, n_pos=16, seed=0):
    """A random state dict in the stanfordnlp/backpack-gpt2 layout, written from its modeling code's
    shapes (Conv1D weights (in, out); the weight net an nn.Linear (out, in)), with the tied aliases
    and the attention buffers."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64) * 0.1
    s = {'backpack.gpt2_model.wte.weight': r(vocab, d), 'backpack.gpt2_model.wpe.weight': r(n_pos, d),
         'backpack.gpt2_model.ln_f.weight': 1 + r(d), 'backpack.gpt2_model.ln_f.bias': r(d)}
    for i in range(n_layer):
        p = f'backpack.gpt2_model.h.{i}.'
        s.update({p + 'ln_1.weight': 1 + r(d), p + 'ln_1.bias': r(d), p + 'ln_2.weight': 1 + r(d), p + 'ln_2.bias': r(d),
                  p + 'attn.c_attn.weight': r(d, 3 * d), p + 'attn.c_attn.bias': r(3 * d),
                  p + 'attn.c_proj.weight': r(d, d), p + 'attn.c_proj.bias': r(d),
                  p + 'mlp.c_fc.weight': r(d, 4 * d), p + 'mlp.c_fc.bias': r(4 * d),
                  p + 'mlp.c_proj.weight': r(4 * d, d), p + 'mlp.c_proj.bias': r(d),
                  p + 'attn.bias': torch.ones(1, 1, n_pos, n_pos).tril(), p + 'attn.masked_bias': torch.tensor(-1e4)})
    p = 'backpack.sense_network.'
    s.update({p + 'ln.weight': 1 + r(d), p + 'ln.bias': r(d), p + 'block.ln_1.weight': 1 + r(d),
              p + 'block.ln_1.bias': r(d), p + 'block.ln_2.weight': 1 + r(d), p + 'block.ln_2.bias': r(d),
              p + 'block.mlp.c_fc.weight': r(d, 4 * d), p + 'block.mlp.c_fc.bias': r(4 * d),
              p + 'block.mlp.c_proj.weight': r(4 * d, d), p + 'block.mlp.c_proj.bias': r(d),
              p + 'final_mlp.c_fc.weight': r(d, 4 * d), p + 'final_mlp.c_fc.bias': r(4 * d),
              p + 'final_mlp.c_proj.weight': r(4 * d, k * d), p + 'final_mlp.c_proj.bias': r(k * d),
              'backpack.sense_weight_net.c_attn.weight': r(2 * d, d), 'backpack.sense_weight_net.c_attn.bias': r(2 * d)})
    s['backpack.word_embeddings.weight'] = s['lm_head.weight'] = s['backpack.gpt2_model.wte.weight']
    s['backpack.position_embeddings.weight'] = s['backpack.gpt2_model.wpe.weight']
    return s


def hf_senses(s, ids, k=K):
    """The HF BackpackSenseNetwork forward written out with Conv1D semantics (x @ W + b), eval mode."""
    p = 'backpack.sense_network.'
    ln = lambda x, n: F.layer_norm(x, x.shape[-1:], s[p + n + '.weight'], s[p + n + '.bias'], 1e-5)
    conv = lambda x, n: x @ s[p + n + '.weight'] + s[p + n + '.bias']
    gelu = lambda x: F.gelu(x, approximate='tanh')
    res = s['backpack.gpt2_model.wte.weight'][ids]
    h = ln(res, 'ln')
    res = h + res
    h = ln(res, 'block.ln_1')
    res = conv(gelu(conv(h, 'block.mlp.c_fc')), 'block.mlp.c_proj') + res
    h = ln(res, 'block.ln_2')
    out = conv(gelu(conv(h, 'final_mlp.c_fc')), 'final_mlp.c_proj')
    return out.view(len(ids), k, -1)


def test_hf_key_map_round_trips_and_loads(tmp_path):
    hf = synthetic_hf_state()
    ours = backpack_from_hf(hf)
    m = tiny()
    assert set(ours) == set(m.state_dict())
    back = backpack_to_hf(ours, L)
    plain = {k: v for k, v in hf.items() if not k.endswith(('.attn.bias', '.attn.masked_bias'))}
    assert set(back) == set(plain) and all(torch.equal(back[k], plain[k]) for k in plain)
    assert torch.equal(backpack_from_hf(backpack_to_hf(m.state_dict(), L))['sense_net.fc2.weight'],
                       m.state_dict()['sense_net.fc2.weight'])
    # load through the file path that train.py --init_from=PATH uses, then check the function, not just keys
    torch.save(hf, tmp_path / 'backpack_gpt2.pt')
    load_pretrained(m, torch_load(tmp_path / 'backpack_gpt2.pt'))
    ids = torch.tensor([3, 17, 0, 39])
    with torch.no_grad():
        assert torch.allclose(m.sense_table(ids), hf_senses(hf, ids), atol=1e-12)
        # weight network: HF reshapes c_attn output (b, s, 2, k, d/k), q = [0], k = [1]
        x = torch.tensor([[1, 5, 9, 2, 8]])
        h, _ = m.trunk(x)
        enc = (h @ hf['backpack.sense_weight_net.c_attn.weight'].T + hf['backpack.sense_weight_net.c_attn.bias'])
        q, kk = enc.view(1, 5, 2, K, D // K).unbind(2)
        sc = torch.einsum('bthd,bshd->bhts', q, kk / math.sqrt(D // K)) + torch.full((5, 5), -1e4).triu(1)
        alpha, _, _ = m.decompose(x)
        assert torch.allclose(alpha, sc.softmax(-1), atol=1e-10)
    # errors a user can cause
    bad = dict(hf)
    bad['lm_head.weight'] = bad['lm_head.weight'] + 1
    with pytest.raises(ValueError, match='tied'):
        backpack_from_hf(bad)
    with pytest.raises(ValueError, match='missing'):
        backpack_from_hf({k: v for k, v in hf.items() if 'final_mlp' not in k})
    with pytest.raises(ValueError, match='shape mismatch'):
        load_pretrained(build_model(ModelConfig(arch='backpack', vocab_size=V, block_size=16,
                        n_layer=L, n_head=2, n_embd=D, n_senses=2)), torch_load(tmp_path / 'backpack_gpt2.pt'))
    assert len(hf_backpack_key_map(L)) == len(ours)


def test_train_init_from_path(char_data, tmp_path):
    """train.py --init_from=PATH loads a backpack-gpt2-layout file and trains from it (optimizer fresh);
    sample.py --sense_edit on the result."""
    import json
    vocab = json.loads((Path(char_data) / 'meta.json').read_text())['vocab_size']
    hf = {k: v.float() for k, v in synthetic_hf_state(n_layer=1, d=32, k=4, vocab=vocab, n_pos=16).items()}
    torch.save(hf, tmp_path / 'w.pt')
    out = tmp_path / 'out'
    r = run_train([f'--data_dir={char_data}', f'--out_dir={out}', '--arch=backpack', '--n_senses=4',
                   f'--init_from={tmp_path / "w.pt"}', '--max_iters=2', '--eval_interval=2'])
    assert 'initialised the weights from' in r.stdout
    ck = torch.load(out / 'last.pt', weights_only=True)
    assert ck['model_args']['arch'] == 'backpack' and ck['iter_num'] == 2
    # sense intervention in sample.py: factor 1 changes nothing, removing every sense of a word does
    import json
    import subprocess
    import sys
    from conftest import train_env
    kl = {}
    for edit in ('t:*=1', 't:*=0', 't:0=0'):
        r = subprocess.run([sys.executable, 'sample.py', f'--out_dir={out}', '--ckpt_name=last.pt', f'--data_dir={char_data}',
                            '--start=not the lord', f'--sense_edit={edit}', '--json'], cwd=REPO, env=train_env(),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        kl[edit] = json.loads(r.stdout)['kl']
        assert json.loads(r.stdout)['positions']['t'] == [2, 3, 4]
    assert abs(kl['t:*=1']) < 1e-12 and kl['t:*=0'] > kl['t:0=0'] > 0
    r = run_train([f'--data_dir={char_data}', f'--out_dir={out}2', '--arch=gpt', f'--init_from={tmp_path / "w.pt"}',
                   '--max_iters=1'], check=False)
    assert r.returncode == 1 and 'backpack' in r.stderr


# ----------------------------------------------------------------------------- prepare/europarl.py and the EN-FR metrics

EN_FR = [('Click the button', 'Cliquez sur le bouton'), ('Open the file', 'Ouvrez le fichier'),
         ('Close the window', 'Fermez la fenêtre'), ('Save the document', 'Enregistrez le document'),
         ('Select the cell', 'Sélectionnez la cellule'), ('Print the table', 'Imprimez le tableau'),
         ('Insert a row', 'Insérez une ligne'), ('Delete the column', 'Supprimez la colonne')]


def test_libreoffice_alignment(tmp_path):
    from prepare.europarl import clean_docs, libreoffice_pairs
    base = tmp_path / 'usr/share/libreoffice/help'
    page = ('<html><body><h1 id="hd_id1">{h}</h1><p id="par_id2" class="paragraph">{p} <span class="x">{s}</span></p>'
            '<table><tr><td id="par_id3"><p>{t}</p></td></tr></table><p id="other">{p}</p>'
            '<li id="par_id4">{same}</li></body></html>')
    (base / 'en-US/text').mkdir(parents=True)
    (base / 'fr/text').mkdir(parents=True)
    (base / 'en-US/text/a.html').write_text(page.format(h='Opening Files', p='Choose', s='File - Open.', t='Cell text',
                                                        same='LibreOffice'))
    (base / 'fr/text/a.html').write_text(page.format(h='Ouvrir des fichiers', p='Choisissez', s='Fichier - Ouvrir.',
                                                     t='Texte de cellule', same='LibreOffice'))
    (base / 'en-US/text/only_en.html').write_text(page.format(h='x y', p='a', s='b', t='c', same='d'))
    docs = libreoffice_pairs(tmp_path)
    assert list(docs) == ['text/a.html']  # a file without its French counterpart is skipped
    assert sorted(docs['text/a.html']) == sorted([('Opening Files', 'Ouvrir des fichiers'),
                                                  ('Choose File - Open.', 'Choisissez Fichier - Ouvrir.'),
                                                  ('Cell text', 'Texte de cellule'), ('LibreOffice', 'LibreOffice')])
    kept, stats = clean_docs({'a': docs['text/a.html'] * 2}, min_words=3, max_words=80)
    assert stats['identical'] == 2                                   # untranslated (identical) pairs dropped
    assert stats['length'] == 4                                      # 'Opening Files', 'Cell text' < 3 words
    assert stats['duplicate'] == 1 and kept['a'] == [('Choose File - Open.', 'Choisissez Fichier - Ouvrir.')]


@pytest.fixture(scope='module')
def europarl_data(tmp_path_factory):
    """prepare/europarl.py --input on a generated line-aligned corpus (40 documents of 10 pairs)."""
    import random
    from prepare.europarl import main
    d = tmp_path_factory.mktemp('europarl')
    rng = random.Random(0)
    en, fr = [], []
    for i in range(400):
        a, b = EN_FR[rng.randrange(len(EN_FR))], EN_FR[rng.randrange(len(EN_FR))]
        en.append(f'{a[0]} and {b[0].lower()} number {i}')
        fr.append(f'{a[1]} et {b[1].lower()} numéro {i}')
    (d / 'corpus.en').write_text('\n'.join(en), encoding='utf-8')
    (d / 'corpus.fr').write_text('\n'.join(fr), encoding='utf-8')
    out = d / 'data'
    main(['--input', str(d / 'corpus'), '--out', str(out), '--chunk', '10', '--vocab_size', '400', '--no_wordsim'])
    (out / 'wordsim').mkdir()
    (out / 'wordsim/simlex999.tsv').write_text('file\tdocument\t6.0\nwindow\ttable\t2.0\nbutton\tcell\t3.5\n'
                                               'click\tselect\t7.0\nrow\tcolumn\t5.0\n')
    (out / 'wordsim/bilingual_en_fr.tsv').write_text('file\tfichier\nwindow\tfenêtre\ntable\ttableau\n')
    return out


def test_prepare_europarl_splits_and_format(europarl_data):
    import json
    import numpy as np
    from corpus import load_tokenizer
    meta = json.loads((europarl_data / 'meta.json').read_text())
    tok = load_tokenizer(europarl_data)
    tags = meta['lang_tags']
    assert meta['dataset'] == 'europarl' and set(tags) == {'<en>', '<fr>'}
    assert all(tok.encode(t) == [i] for t, i in tags.items())
    docs = meta['documents']
    assert not set(docs['train']) & set(docs['test']) and not set(docs['val']) & set(docs['test'])
    train_text = tok.tok.decode(np.fromfile(europarl_data / 'train.bin', dtype=np.uint16).tolist(), skip_special_tokens=False)
    assert '<en>' in train_text and '<fr>' in train_text
    pairs = [json.loads(l) for l in (europarl_data / 'test.pairs.jsonl').read_text().splitlines()]
    assert pairs and all(p['doc'] in docs['test'] for p in pairs)
    for p in pairs:  # held-out pairs never appear in training, on either side
        assert p['en'] not in train_text and p['fr'] not in train_text


def test_europarl_metrics_on_tiny_models(europarl_data):
    import json
    import numpy as np
    import evals.europarl as ev
    meta = json.loads((europarl_data / 'meta.json').read_text())
    # the language of each token: after <en> English, after <fr> French, tags/separators excluded
    en, fr, sep = meta['lang_tags']['<en>'], meta['lang_tags']['<fr>'], meta['sep_id']
    seq = np.array([sep, en, 50, 51, fr, 60, sep, 70, fr, 80, en, 90])
    assert ev._lang_of_tokens(seq, meta['lang_tags'], sep).tolist() == [-1, -1, 0, 0, -1, 1, -1, -1, -1, 1, -1, 0]
    assert ev.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert ev.spearman([1, 2, 2, 4], [4, 3, 3, 1]) == pytest.approx(-1.0)
    for arch in ('backpack', 'gpt'):
        torch.manual_seed(0)
        m = build_model(ModelConfig(arch=arch, vocab_size=meta['vocab_size'], block_size=64, n_layer=1, n_head=2,
                                    n_embd=32, n_senses=4)).eval()
        lang = ev.europarl_lang_metrics(m, europarl_data, 'val', 64, 'cpu')
        assert lang['val_en_tokens'] > 0 and lang['val_fr_tokens'] > 0
        assert 1 < lang['val_en_ppl'] < 10 * meta['vocab_size'] and lang['val_fr_bpb'] > 0
        tr = ev.translation_metrics(m, europarl_data, 'cpu', n=3, beam=2, max_new=4)
        assert tr['translate_pairs'] == 3
        for k in ('bleu', 'chrf', 'exact', 'word_acc', 'char_acc'):
            assert f'translate_greedy_{k}' in tr and f'translate_beam_{k}' in tr
        ws = ev.word_similarity_metrics(m, europarl_data)
        assert ws['ws_simlex999_pairs'] == 5 and ws['ws_simlex999_oov_pairs'] == 0
        assert 0 <= ws['ws_simlex999_single_pairs'] <= 5 and 'ws_simlex999_emb_spearman' in ws
        assert ('ws_simlex999_min_spearman' in ws) == (arch == 'backpack')
        assert ws['xling_pairs'] == 3 and -1 <= ws['xling_gap'] <= 2
        if arch == 'backpack':
            stats, table = ev.sense_tables(m, europarl_data, ['file', 'fenêtre'], top=3)
            assert table.count('| 3 |') == 2 and 0 < stats['sense_entropy_mean'] <= math.log(meta['vocab_size']) + 1e-6


def test_europarl_tgz_reader(tmp_path):
    """The online / --input .tgz path: line-aligned .en/.fr members cut into documents of `chunk` lines."""
    import io
    import tarfile
    from prepare.europarl import read_tgz
    en, fr = '\n'.join(f'sentence {i}' for i in range(25)), '\n'.join(f'phrase {i}' for i in range(25))
    with tarfile.open(tmp_path / 'fr-en.tgz', 'w:gz') as tf:
        for name, text in (('europarl-v7.fr-en.en', en), ('europarl-v7.fr-en.fr', fr)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    docs = read_tgz(tmp_path / 'fr-en.tgz', chunk=10)
    assert [len(v) for v in docs.values()] == [10, 10, 5]
    assert docs['europarl:000002'][0] == ('sentence 20', 'phrase 20')
