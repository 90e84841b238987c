"""A Hugging Face masked LM over the signs (hf_encoder.py): the sign-level ranking on a case computed by hand,
the sparse output layer against the full one on a tiny ModernBERT, whole-sign masking of the piece rows, the
tokenization audit against a direct count, and the whole offline path (a tiny ModernBERT + tokenizer built
with save_pretrained -> train.py -> artifacts before/after -> evaluate.py -> sample.py) with the model
directory deleted before evaluation, so the checkpoint alone must rebuild it. CPU, no network."""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import REPO, run_train, train_env

transformers = pytest.importorskip('transformers')

from evals.akkadian import rank_stats
from hf_encoder import HFSignEncoder, build_hf, build_tiny, hf_model_args, sign_pieces, tokenization_audit  # noqa: E402
from restoration import encoder_scorer  # noqa: E402

FIX = Path(__file__).parent / 'fixtures' / 'akkadian'
P_PAD, P_UNK, P_CLS, P_SEP, P_MASK, P_P, P_Q, P_R = range(8)      # piece ids of the hand-made case
SPECIALS = {'pad': P_PAD, 'unk': P_UNK, 'cls': P_CLS, 'sep': P_SEP, 'mask': P_MASK}


class StubMLM(torch.nn.Module):
    """A 'pretrained' masked LM whose predictions are fixed by hand: a lone mask piece is p w.p. 1/2, q and r
    w.p. 1/4 each; in a run of two mask pieces the first is certainly q and the second certainly r."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(8, 4)
        self.config = SimpleNamespace(num_hidden_layers=1, hidden_size=4, num_attention_heads=1, max_position_embeddings=64)

    def get_input_embeddings(self):
        return self.emb

    def get_output_embeddings(self):
        return None

    def forward(self, input_ids, attention_mask=None, **_):
        R, L = input_ids.shape
        logits = torch.full((R, L, 8), float('-inf'))
        m = input_ids == P_MASK
        for r in range(R):
            for t in range(L):
                if not m[r, t]:
                    logits[r, t, input_ids[r, t]] = 0.0
                    continue
                left, right = t > 0 and m[r, t - 1], t + 1 < L and m[r, t + 1]
                if not left and not right:
                    logits[r, t, [P_P, P_Q, P_R]] = torch.log(torch.tensor([0.5, 0.25, 0.25]))
                else:
                    logits[r, t, P_Q if not left else P_R] = 0.0
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize('prior', [None, {1: math.log(0.4), 2: math.log(0.6)}])
def test_sign_ranking_by_hand(prior):
    """Signs A = [p], B = [q r], C = [q] (sign ids 3, 4, 5 after [PAD] [UNK] [MASK]). With one mask piece the
    joint scores are s(A) = 1/2, s(C) = 1/4; with two, B's pieces are certain: s(B) = 1 * 1.
    Raw scores normalised over the signs: p(A) = 0.5/1.75, p(B) = 1/1.75, p(C) = 0.25/1.75.
    With the piece-count prior P(1) = 0.4, P(2) = 0.6: p(A) = 0.4 * 0.5/0.75, p(C) = 0.4 * 0.25/0.75, p(B) = 0.6 * 1.
    Either way B ranks first, then A, then C."""
    pieces = [[P_PAD], [P_UNK], [P_MASK], [P_P], [P_Q, P_R], [P_Q]]
    model = HFSignEncoder(StubMLM(), pieces, n_lead=3, mask_sign=2, specials=SPECIALS, block_size=8,
                          count_logprior=prior).eval()
    assert model.piece_counts == [1, 2]
    x = torch.tensor([[3, 2, 5, 2, 4]])       # A [MASK] C [MASK] B: two masked signs in one line
    logp = encoder_scorer(model, banned_ids=[0, 1, 2])(x)
    want = (torch.tensor([0.5, 1.0, 0.25]) / 1.75 if prior is None else
            torch.tensor([0.4 * 0.5 / 0.75, 0.6, 0.4 * 0.25 / 0.75]))
    for t in (1, 3):  # float32 log_softmax of exact logs: 1e-6 is a few ulps of these probabilities
        assert torch.allclose(logp[0, t, 3:].exp(), want, atol=1e-6), logp[0, t].exp()
        assert torch.isneginf(logp[0, t, :3]).all()
    st = rank_stats(logp[0, [1, 3]], [4, 3])   # the truth is B at the first mask, A at the second
    assert st['top1'] == 1.0 and st['mrr'] == pytest.approx(1 + 1 / 2)
    assert st['nll'] == pytest.approx(-math.log(want[1]) - math.log(want[0]), abs=1e-5)


@pytest.fixture(scope='module')
def akk_data(tmp_path_factory):
    """A sign-level dataset from the fixture ATF (12 copies of one text, so it splits) and a tiny random-init
    ModernBERT + BPE tokenizer written with save_pretrained."""
    from atf import parse_atf
    from prepare.akkadian import build_dataset
    d = tmp_path_factory.mktemp('hf')
    text = (FIX / 'sample.atf').read_text(encoding='utf-8')
    body = text.split('&P100002')[0].split('\n', 1)[1]
    atf = ''.join(f'&P{k:06d} = copy {k}\n{body}' for k in range(12))
    build_dataset(parse_atf(atf), d / 'data', seed=1337, source='input')
    build_tiny(d / 'base', d / 'data', vocab=60, d=32, layers=2, heads=2)
    return d


def test_sparse_output_layer_and_rows(akk_data):
    """sign_scores (the MLM decoder run only at the mask pieces) equals the same sum computed from the full logits
    of the HF model on hand-built rows; training rows mask every piece of a masked sign."""
    torch.manual_seed(0)
    model = build_hf(hf_model_args(f'hf:{akk_data / "base"}', akk_data / 'data', 16), f'hf:{akk_data / "base"}').eval()
    sp, P = model.sp, model.pieces
    multi = next(s for s in range(model.n_lead, len(P)) if len(P[s]) > 1)
    x = torch.tensor([[7, 8, 4, 9, multi]])
    prior = model.count_logprior
    assert sum(math.exp(v) for v in prior.values()) == pytest.approx(1.0)
    normed = model(x)[0][0, 2]
    for k, lp in prior.items():  # within each piece count the signs share P(k) (float32 sums: 1e-4)
        assert torch.logsumexp(normed[getattr(model, f'cand_{k}')], 0).item() == pytest.approx(lp, abs=1e-4)
    model.count_logprior = None
    scores = model(x)[0]
    for k in model.piece_counts[:3]:
        row = [sp['cls']] + P[7] + P[8] + [sp['mask']] * k + P[9] + P[multi] + [sp['sep']]
        with torch.no_grad():
            lp = torch.log_softmax(model.hf(input_ids=torch.tensor([row])).logits[0].float(), -1)
        m0 = 1 + len(P[7]) + len(P[8])
        for s in range(model.n_lead, len(P)):
            if len(P[s]) == k:  # another matmul shape than the (N, d) sparse path: float32 tolerance
                direct = sum(lp[m0 + j, P[s][j]].item() for j in range(k))
                assert scores[0, 2, s].item() == pytest.approx(direct, abs=1e-4)
    assert torch.isneginf(scores[0, 2, :model.n_lead]).all() and (scores[0, [0, 1, 3, 4]] == 0).all()
    # whole-sign masking: a masked multi-piece sign is all mask pieces, labelled with its own pieces; a randomly
    # replaced one keeps its piece count; a document boundary starts a new [CLS] ... [SEP] row
    y = torch.full_like(x, -1)
    y[0, 4], y[0, 0] = multi, 7
    xin = x.clone()
    xin[0, 4], xin[0, 0] = 4, 9
    ids, att, lab, own = model.rows(xin, y, doc=torch.tensor([[0, 0, 0, 1, 1]]))
    assert ids.shape[0] == 2 and (ids[:, 0] == sp['cls']).all()
    r1 = ids[1][att[1] == 1].tolist()
    assert r1 == [sp['cls']] + P[9] + [sp['mask']] * len(P[multi]) + [sp['sep']]
    assert lab[1][lab[1] >= 0].tolist() == P[multi] and own[1][own[1] >= 0].tolist() == [3] * len(P[9]) + [4] * len(P[multi])
    first = (own[0] == 0).nonzero().flatten()
    assert len(first) == len(P[7]) and lab[0, first].tolist() == P[7]
    assert not set(ids[0, first].tolist()) & set(sp.values())


def test_tokenization_audit_counts(akk_data):
    from atf import FLAG_SIGN
    from corpus import load_meta
    from restoration import read_fragments
    tok = transformers.AutoTokenizer.from_pretrained(akk_data / 'base')
    res = tokenization_audit(tok, akk_data / 'data')
    meta = load_meta(akk_data / 'data')
    itos, n_lead = meta['vocab'], meta['n_specials']
    signs = [int(i) for ids, fl in read_fragments(akk_data / 'data', 'train')
             for i, f in zip(ids, fl) if f & FLAG_SIGN and i >= n_lead]
    counts = [len(tok(' ' + itos[s], add_special_tokens=False)['input_ids']) for s in signs]
    assert res['signs'] == len(signs) and res['pieces_per_sign'] == pytest.approx(np.mean(counts))
    assert res['single_piece_share'] == pytest.approx(np.mean([c == 1 for c in counts]))
    assert sum(c['tokens'] for c in res['classes'].values()) == len(signs)
    assert res['classes']['determinative']['examples'][0]['sign'].startswith('{')
    top = res['most_fragmented'][0]
    assert len(top['pieces']) == max(counts)


def test_offline_path_end_to_end(akk_data, tmp_path):
    """train.py fine-tunes the tiny model (artifacts before and after, pooled per sign), the model directory is
    deleted, and evaluate.py / sample.py rebuild it from the checkpoint alone."""
    base = tmp_path / 'base'
    shutil.copytree(akk_data / 'base', base)
    out = tmp_path / 'out'
    run_train(['--arch=hf', f'--init_from=hf:{base}', f'--data_dir={akk_data / "data"}', '--dataset=akkadian',
               f'--out_dir={out}', '--doc_mask=True', '--max_iters=4', '--eval_interval=2', '--save_artifacts=True',
               '--artifact_layers=0,2', '--mask_rate=0.3'])
    shutil.rmtree(base)
    a0 = torch.load(out / 'artifacts_init.pt', weights_only=True)
    a1 = torch.load(out / 'artifacts_final.pt', weights_only=True)
    n = len(a0['token_ids'])
    assert torch.equal(a0['token_ids'], a1['token_ids']) and a0['layers'] == [0, 2]
    V = json.loads((akk_data / 'data' / 'meta.json').read_text())['vocab_size']
    assert a0['hidden']['2'].shape == (n, 32) and a0['embeddings'].shape == (V, 32)  # per sign, as the encoder's
    assert not torch.equal(a0['hidden']['2'], a1['hidden']['2'])  # 4 AdamW steps moved the weights
    ck = torch.load(out / 'ckpt.pt', weights_only=True)
    assert ck['model_args']['arch'] == 'hf' and 'tokenizer.json' in ck['model_args']['hf_tokenizer']
    from evaluate import run_eval
    res = run_eval(str(out), n_spans=2, beam=2, max_gap_len=2, subset_size=2)
    for k in ('test_top1', 'test_top10', 'test_mrr', 'test_nll', 'test_unigram_top1', 'test_ngram_mrr',
              'test_span_exact', 'test_span2_ser'):
        assert k in res and isinstance(res[k], float), k
    assert 0 <= res['test_top1'] <= res['test_top5'] <= res['test_top10'] <= 1 and res['test_masked_signs'] > 0
    assert json.loads((out / 'eval.json').read_text())['test_nll'] == res['test_nll']
    r = subprocess.run([sys.executable, 'sample.py', f'--out_dir={out}', '--text=a-na [x x] be-li₂-ia', '--beam=3',
                        '--candidates=2', '--scorer=model', '--json'], cwd=REPO, env=train_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    j = json.loads(r.stdout)
    g = j['gaps'][0]
    assert g['length'] == 2 and len(g['candidates']) == 2 and all(len(c['signs']) == 2 for c in g['candidates'])
    assert j['best'].startswith('a-na [')
