"""Sparse autoencoders (sae.py), probes (probes.py) and interpret.py: planted dictionaries are recovered, TopK
keeps exactly k units, dead / dense latents are counted right, a probe finds a planted signal and not a
shuffled one, the labels of the Akkadian data, the downstream check's exact decompositions, and the command
end to end on a tiny encoder trained with --save_artifacts=True."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, run_train, train_env
from probes import identity_baseline, majority_baseline, probe_scores
from sae import dead_dense, density, fvu, pca_fvu, SAE, sae_loss, sae_metrics, train_sae

FIX = Path(__file__).parent / 'fixtures' / 'akkadian'


def planted(n=2000, d=16, m=32, active=3, seed=0):
    """x = D c: n samples of `active` atoms of a known unit-norm dictionary D (d x m), coefficients in [0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    D = F.normalize(torch.randn(d, m, generator=g), dim=0)
    support = torch.stack([torch.randperm(m, generator=g)[:active] for _ in range(n)])
    c = torch.zeros(n, m).scatter(1, support, torch.rand(n, active, generator=g) + 0.5)
    return c @ D.T, D, support


# ----------------------------------------------------------------------------- SAEs

def test_topk_sae_recovers_a_planted_dictionary_and_its_supports():
    x, D, support = planted()
    sae, _ = train_sae(x, 32, 'topk', k=3, steps=400, lr=3e-3, seed=0)
    cos = D.T @ sae.W_dec.detach()                      # atoms x latents, both unit norm
    best_cos, match = cos.max(1)
    assert best_cos.min() > 0.9                          # every planted atom has a latent along it
    assert len(set(match.tolist())) == 32                # ... and a latent of its own
    z = sae.encode(x)
    active = [set(torch.nonzero(r).flatten().tolist()) for r in z]
    want = [set(match[s].tolist()) for s in support]
    # the right atoms fire, not just the right directions: 86% of each sample's atoms (chance: 3 of 32)
    assert np.mean([len(a & w) / 3 for a, w in zip(active, want)]) > 0.8
    # the same data from a random dictionary of the same shape is not "recovered": the check can fail
    other = F.normalize(torch.randn(16, 32, generator=torch.Generator().manual_seed(9)), dim=0)
    assert (other.T @ sae.W_dec.detach()).max(1).values.mean() < 0.8


def test_l1_sae_recovers_a_planted_dictionary_and_is_sparser_with_larger_lambda():
    x, D, _ = planted()
    l0 = []
    for lam in (0.01, 0.05):
        sae, _ = train_sae(x, 32, 'l1', l1_coeff=lam, steps=400, lr=3e-3, seed=0)
        l0.append(sae_metrics(sae, x)[0]['l0'])
    assert (D.T @ sae.W_dec.detach()).max(1).values.mean() > 0.9
    assert l0[1] < l0[0]


def test_topk_keeps_exactly_k_active_units_the_k_largest():
    torch.manual_seed(0)
    sae = SAE(8, 40, 'topk', k=5)
    x = torch.randn(64, 8)
    z = sae.encode(x)
    assert ((z > 0).sum(1) <= 5).all()                   # never more than k
    with torch.no_grad():
        sae.b_enc.fill_(100.0)                           # every pre-activation positive: exactly k survive
    a, z = sae.pre_acts(x), sae.encode(x)
    assert ((z > 0).sum(1) == 5).all()
    kept = z > 0
    assert torch.equal(torch.sort(a[kept].view(64, 5), 1).values, torch.sort(a.topk(5, 1).values, 1).values)
    assert torch.equal(z[kept], a[kept])                 # the kept values pass unchanged (ReLU of positives)
    with pytest.raises(ValueError, match='k must lie'):
        SAE(8, 4, 'topk', k=5)


def test_dead_and_dense_latents_on_a_constructed_case():
    z = torch.zeros(100, 10)
    z[:50, 3] = 1.0          # density 0.5: dense
    z[:11, 4] = 2.0          # 0.11: dense
    z[:10, 5] = 1.0          # exactly 0.1: not dense (the threshold is "more than")
    z[:1, 6] = 0.5           # 0.01
    z[:, 7] = 3.0            # 1.0: dense
    z[:5, 8] = -1.0          # never positive: dead, like 0, 1, 2 and 9
    dens = density(z)
    assert torch.allclose(dens, torch.tensor([0, 0, 0, .5, .11, .1, .01, 1, 0, 0], dtype=torch.float64))
    assert dead_dense(dens, 0.1) == (0.5, 0.3)
    # the same count through an SAE whose latents 0..5 can never fire
    torch.manual_seed(0)
    sae = SAE(4, 12, 'l1')
    with torch.no_grad():
        sae.b_enc[:6] = -1e4
        sae.b_enc[6:] = 1e4   # and the others always do
    m, dens = sae_metrics(sae, torch.randn(50, 4))
    assert m['dead'] == 0.5 and m['dense'] == 0.5 and m['l0'] == 6


def test_auxk_term_reaches_the_dead_latents_only():
    """Gao et al.'s AuxK term: latents that did not fire get a gradient through it (without it they get none),
    and the loss is unchanged when no latent is dead."""
    torch.manual_seed(0)
    sae = SAE(8, 32, 'topk', k=2)
    xb = torch.randn(16, 8)
    loss, z = sae_loss(sae, xb)
    silent = ~(z > 0).any(0)
    assert silent.sum() > 4
    loss.backward()
    assert sae.W_enc.grad[silent].abs().sum() == 0        # the main loss never reaches a latent that did not fire
    sae.zero_grad()
    aux, _ = sae_loss(sae, xb, dead=silent, aux_k=4)
    assert aux > loss                                      # the AuxK term was added ...
    aux.backward()
    got = sae.W_enc.grad.abs().sum(1) > 0
    assert got[silent].sum() >= 4                          # ... and reaches up to aux_k dead latents per token
    assert torch.equal(sae_loss(sae, xb, dead=torch.zeros(32, dtype=torch.bool))[0], loss.detach())


def test_fvu_and_the_pca_baseline():
    torch.manual_seed(0)
    x = torch.randn(200, 6)
    assert fvu(x, x) == 0 and fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0)
    low = torch.randn(300, 2) @ torch.randn(2, 6)        # rank 2: two components explain it all
    assert pca_fvu(low[:200], low[200:], 2) < 1e-10 and pca_fvu(low[:200], low[200:], 1) > 0.01


# ----------------------------------------------------------------------------- probes

def planted_labels(n=1200, d=16, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x @ torch.randn(d, classes, generator=g) + 0.3 * torch.randn(n, classes, generator=g)).argmax(1)
    return x, y


def test_probe_beats_chance_on_a_planted_signal_and_not_on_shuffled_labels():
    x, y = planted_labels()
    ids = torch.arange(len(y))  # every token its own id: the identity baseline falls back to the majority
    r = probe_scores(x[:800], y[:800], x[800:], y[800:], ids[:800], ids[800:], 3, seed=0)
    chance = max(torch.bincount(y[800:]).tolist()) / 400
    assert r['probe'] > 0.85 and r['majority'] <= chance + 1e-9 and r['identity'] == r['majority']
    assert r['shuffled'] < chance + 0.08
    # labels unrelated to the states: the probe itself stays at chance
    noise = torch.randint(0, 3, (1200,), generator=torch.Generator().manual_seed(1))
    r = probe_scores(x[:800], noise[:800], x[800:], noise[800:], ids[:800], ids[800:], 3, seed=0)
    assert r['probe'] < 0.33 + 0.1


def test_majority_and_identity_baselines():
    y_tr, y_te = torch.tensor([0, 1, 1, 2, 2, 2]), torch.tensor([2, 2, 1, 0])
    assert majority_baseline(y_tr, y_te) == 0.5
    ids_tr, ids_te = torch.tensor([7, 7, 7, 8, 9, 9]), torch.tensor([9, 5, 7, 8])
    # id 7 -> 1 (two of three), 8 -> 2, 9 -> 2, unseen 5 -> the majority 2: right on 9, 5 and 7
    assert identity_baseline(ids_tr, y_tr, ids_te, y_te) == 0.75


# ----------------------------------------------------------------------------- labels and the downstream check

@pytest.fixture(scope='module')
def interp():
    sys.argv = ['interpret.py']
    import interpret
    return interpret


def test_sign_classes_and_index_bearing_readings(interp):
    cls = {t: interp.sign_class(t) for t in ('{d}', '{ki}', 'KUR', 'E2', '|A.AN|', 'ša2', 'a', '30', '1(u)', '[GAP]')}
    assert cls == {'{d}': 'determinative', '{ki}': 'determinative', 'KUR': 'logogram', 'E2': 'logogram',
                   '|A.AN|': 'logogram', 'ša2': 'syllabic', 'a': 'syllabic', '30': 'number', '1(u)': 'number',
                   '[GAP]': 'special'}
    assert [interp.index_bearing(t) for t in ('ša2', 'E2', '{lu2}', 'tuₓ', 'ša', 'KUR', '30', '[GAP]')] == \
        [True, True, True, True, False, False, False, False]


def test_token_table_positions_damage_and_context(interp):
    from atf import FLAG_SIGN, FLAG_WORD_START
    from atf import FLAG_DAMAGED, FLAG_MISSING, FLAG_RESTORED
    S, W = FLAG_SIGN, FLAG_WORD_START
    vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '[GAP]', '[GAPN]', 'a', 'na', '{d}', 'UTU', 'be', 'li2', 'ia']
    # document 0: a-na {d}UTU be-li2#-ia x ; document 1: [a]-na
    toks = ['a', 'na', '{d}', 'UTU', 'be', 'li2', 'ia', '[GAP]', 'a', 'na']
    flags = [S | W, S, S | W, S, S | W, S | FLAG_DAMAGED, S, FLAG_MISSING | W, S | FLAG_RESTORED, S]
    ids = np.array([vocab.index(t) for t in toks])
    tt = interp.token_table(ids, np.array(flags, np.uint8), np.array([0, 8, 10]), vocab, ['rinap', 'saao'])
    assert tt['pos'].tolist() == [0, 1, 0, 1, 0, 1, 2, 0, 0, 1]
    assert tt['wlen'].tolist() == [2, 2, 2, 2, 3, 3, 3, 1, 2, 2]
    assert tt['final'].tolist() == [False, True, False, True, False, False, True, True, False, True]
    assert tt['damaged'].tolist() == [False] * 5 + [True] + [False] * 2 + [True, False]
    # next to damage: neighbours of li2# (be, ia), of the gap (ia; not a of the next document), of [a] (na)
    assert tt['near_damage'].tolist() == [False] * 4 + [True, False, True, False, False, True]
    assert tt['real'].tolist() == [True] * 7 + [False, True, True]
    assert list(tt['source']) == ['rinap'] * 8 + ['saao'] * 2
    labels = interp.probe_labels(tt)
    assert labels['sign_class'][:4].tolist() == [2, 2, 0, 1] and labels['word_length'][4] == 2
    assert interp.render_context(tt, 3, words=1) == 'a-na {d}«UTU» be-li2#-ia'
    assert interp.render_context(tt, 9) == '[a]-«na»'


def tiny_encoder(n_layer=2):
    from model import ModelConfig, build_model
    torch.manual_seed(0)
    return build_model(ModelConfig(arch='encoder', vocab_size=30, block_size=8, n_layer=n_layer, n_head=2, n_embd=16,
                                   dropout=0.0, bias=False, norm='rmsnorm', mlp='geglu', pos='rope')).eval()


def test_downstream_replacing_a_layer_by_itself_is_the_clean_pass(interp):
    model = tiny_encoder()
    ids = torch.randint(7, 30, (21,), generator=torch.Generator().manual_seed(0))
    spans = interp.pieces_of(np.array([0, 13, 21]), 8)
    assert spans == [(0, 8), (8, 13), (13, 21)]
    clean, hs = interp.run_pieces(model, ids, spans, [0, 1, 2])
    for l in (0, 1, 2):
        same, _ = interp.run_pieces(model, ids, spans, replace=(l, lambda h: h))
        assert torch.allclose(same, clean, atol=1e-5)
        mean, _ = interp.run_pieces(model, ids, spans, replace=(l, lambda h: h.mean(0).expand_as(h)))
        assert (mean - clean).abs().max() > 1e-3
    # the states of each piece are those of the piece run alone (as train.py's write_artifacts ran them)
    _, alone = model.trunk(ids[8:13][None], None, {2})
    assert torch.allclose(hs[2][8:13], alone[2][0], atol=1e-5)


def test_masked_input_masks_only_targets_at_the_rate(interp):
    from atf import FLAG_SIGN
    from atf import FLAG_MISSING, FLAG_RESTORED
    n = 4000
    ids = np.full(n, 9)
    flags = np.full(n, FLAG_SIGN, np.uint8)
    flags[::4] = FLAG_SIGN | FLAG_RESTORED   # never targets
    flags[1::4] = FLAG_MISSING
    spans = interp.pieces_of(np.array([0, n]), 64)
    x, chosen = interp.masked_input(ids, flags, spans, 4, 7, 0.15, 0)
    assert not chosen[::4].any() and not chosen[1::4].any()
    assert (x.numpy() == 4).sum() == chosen.sum() and abs(chosen.sum() / (n / 2) - 0.15) < 0.03
    x2, chosen2 = interp.masked_input(ids, flags, spans, 4, 7, 0.15, 0)
    assert np.array_equal(chosen, chosen2)   # a fixed seed


# ----------------------------------------------------------------------------- the command end to end

@pytest.fixture(scope='module')
def akk_run(tmp_path_factory):
    """A tiny 2-layer encoder trained for a few iterations on documents built from the fixture ATF, with artifacts."""
    from atf import parse_atf
    from prepare.akkadian import build_dataset
    d = tmp_path_factory.mktemp('akk_interp')
    text = (FIX / 'sample.atf').read_text(encoding='utf-8')
    body = text.split('&P100002')[0].split('\n', 1)[1]
    atf = ''.join(f'&P{k:06d} = copy {k}\n{body}' for k in range(30))
    build_dataset(parse_atf(atf), d / 'data', seed=1337, source='input')
    out = d / 'out'
    run_train(['--arch=encoder', f'--data_dir={d / "data"}', '--dataset=akkadian', f'--out_dir={out}', '--n_layer=2',
               '--norm=rmsnorm', '--mlp=geglu', '--pos=rope', '--bias=False', '--doc_mask=True', '--d_kv=16',
               '--max_iters=4', '--eval_interval=2', '--save_artifacts=True', '--artifact_layers=0,1,2'])
    return d / 'data', out


def run_interpret(out, *args):
    cmd = [sys.executable, 'interpret.py', f'--out_dir={out}', '--sae_steps=30', '--expansion=2', '--k=4',
           '--num_threads=1', *args]
    return subprocess.run(cmd, cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=300)


def test_interpret_writes_every_metric_for_init_and_final(akk_run):
    data, out = akk_run
    r = run_interpret(out)
    assert r.returncode == 0, r.stderr[-3000:]
    res = out / 'interpret'
    for name in ('report.md', 'metrics.json', 'sae_by_layer.png', 'probes_by_layer.png', 'feature_density.png',
                 'probes.tsv', 'saes.pt', 'features_init_L0.tsv', 'features_final_L2.tsv'):
        assert (res / name).is_file() and (res / name).stat().st_size > 0, name
    M = json.loads((res / 'metrics.json').read_text())
    for s in ('init', 'final'):
        for l in (0, 1, 2):
            for key in ('fvu', 'fvu_train', 'fvu_pca', 'l0', 'dead', 'dense', 'loss_clean', 'loss_sae',
                        'loss_mean_ablation', 'fvu_masked', 'eff_dim'):
                assert isinstance(M[f'{s}_L{l}_{key}'], float), (s, l, key)
            assert M[f'{s}_L{l}_l0'] <= 4
            for task in ('sign_class', 'word_position', 'word_final', 'word_length'):
                for key in ('probe', 'shuffled', 'majority', 'identity'):
                    assert 0 <= M[f'{s}_L{l}_probe_{task}_{key}'] <= 1
        assert M[f'{s}_masked_signs'] > 0
    report = (res / 'report.md').read_text()
    assert '![SAE metrics by layer](sae_by_layer.png)' in report and 'feature_density.png' in report
    assert 'recomputed' in report        # says the masked input's states are not the saved ones
    head = (res / 'features_final_L1.tsv').read_text().splitlines()[0].split('\t')
    assert head[:3] == ['feature', 'density', 'max_act'] and 'share determinative' in head
    assert not list(out.glob('.interpret*'))   # nothing half-written left behind
    ws = torch.load(res / 'saes.pt', weights_only=True)
    assert set(ws['state_dicts']) == {f'{s}_L{l}' for s in ('init', 'final') for l in (0, 1, 2)}


def test_interpret_takes_other_stages_with_the_same_layout(akk_run, tmp_path):
    """The hook for other encoders (a pretrained one): artifacts_NAME.pt without a checkpoint of this toolkit
    gets SAEs, features and probes, and its downstream check is skipped with a line saying why."""
    data, out = akk_run
    other = tmp_path / 'other'
    other.mkdir()
    shutil.copy(out / 'artifacts_final.pt', other / 'artifacts_pretrained.pt')
    r = run_interpret(other, f'--data_dir={data}', '--sae=l1', '--l1_coeff=0.1')   # and the L1 SAE end to end
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'downstream check of pretrained skipped: no checkpoint pretrained.pt' in r.stdout
    M = json.loads((other / 'interpret' / 'metrics.json').read_text())
    assert 'pretrained_L2_fvu' in M and 'pretrained_L2_loss_sae' not in M and M['sae'] == 'l1'
    assert 'L1 (Bricken et al. 2023)' in (other / 'interpret' / 'report.md').read_text()
    # without --data_dir nothing says which data the artifacts belong to: one line
    r = run_interpret(other)
    assert r.returncode == 1 and r.stderr.strip().count('\n') == 0 and '--data_dir' in r.stderr


def test_interpret_refuses_artifacts_of_other_data(akk_run, tmp_path):
    data, out = akk_run
    bad = tmp_path / 'data'
    shutil.copytree(data, bad)
    ids = np.fromfile(bad / 'val.bin', dtype=np.uint16)
    ids[1] = 7 if ids[1] != 7 else 8
    ids.tofile(bad / 'val.bin')
    other = tmp_path / 'run'
    other.mkdir()
    shutil.copy(out / 'artifacts_init.pt', other / 'artifacts_init.pt')
    r = run_interpret(other, f'--data_dir={bad}')
    assert r.returncode == 1 and 'are not those of' in r.stderr and not (other / 'interpret').exists()
    r = run_interpret(tmp_path / 'nothing-here')
    assert r.returncode == 1 and 'not a directory' in r.stderr
