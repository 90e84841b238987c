"""morphology-aware ("agglutinative") attention. Word index / token class from vocabulary tables,
causality with non-zero biases, exact equivalence to standard attention at zero init, gradients reaching
every new parameter, the Turkish token tables and the paired configs."""
import ast
from pathlib import Path

import pytest
import torch

from model import (agglutinative_biases, agglutinative_inputs, Attention, build_model, format_agglutinative_biases, GPT,
                   ModelConfig, word_signals)

REPO = Path(__file__).resolve().parents[1]

# a hand-made vocabulary: id -> (piece, word_start, class)
VOCAB = [('[SEP]', 1, 3), ('▁ev', 1, 0), ('ler', 0, 1), ('de', 0, 1), ('k', 0, 2), (',', 1, 3), ('▁git', 1, 0),
         ('tim', 0, 2), ('▁', 1, 0), ('7', 1, 3)]
WS = torch.tensor([v[1] for v in VOCAB])
TC = torch.tensor([v[2] for v in VOCAB])


def cfg(**kw):
    base = dict(vocab_size=len(VOCAB), block_size=32, n_layer=2, n_head=4, n_embd=32, dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


def make(seed=0, **kw):
    torch.manual_seed(seed)
    m = build_model(cfg(**kw))
    m.set_token_tables(WS.tolist(), TC.tolist())
    return m.eval()


def randomise_biases(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'agglu' in name:
                p.copy_(torch.randn(p.shape, generator=g))


def test_word_signals_hand_made():
    #        ▁ev ler de  ,  ▁git k  ler  ▁  7
    idx = torch.tensor([[1, 2, 3, 5, 6, 4, 2, 8, 9]])
    w, tau, p = word_signals(idx, WS, TC)
    assert w.tolist() == [[0, 0, 0, 1, 2, 2, 2, 3, 4]]
    assert tau.tolist() == [[0, 1, 1, 3, 0, 2, 1, 0, 3]]
    assert p.tolist() == [[0, 1, 2, 0, 0, 1, 2, 0, 0]]
    # a window that starts inside a word: its first tokens get w = -1
    w, _, p = word_signals(torch.tensor([[2, 3, 6, 7]]), WS, TC)
    assert w.tolist() == [[-1, -1, 0, 0]] and p.tolist() == [[0, 1, 0, 1]]


def test_word_signals_causal():
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(VOCAB), (4, 24), generator=g)
    w, tau, p = word_signals(idx, WS, TC)
    for t in range(1, 24):
        other = idx.clone()
        other[:, t:] = torch.randint(0, len(VOCAB), (4, 24 - t), generator=g)
        w2, tau2, p2 = word_signals(other, WS, TC)
        assert torch.equal(w[:, :t], w2[:, :t]) and torch.equal(tau[:, :t], tau2[:, :t]) and torch.equal(p[:, :t], p2[:, :t])


@pytest.mark.parametrize('kw', [{}, {'agglu_input_emb': True}, {'doc_mask': True}, {'arch': 'backpack', 'n_senses': 4},
                                {'pos': 'rope'}])
def test_causal_with_nonzero_biases(kw):
    m = make(attention='agglutinative', **kw)
    randomise_biases(m)
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, len(VOCAB), (2, 20), generator=g)
    doc = torch.tensor([[0] * 8 + [1] * 12, [0] * 20]) if kw.get('doc_mask') else None
    with torch.no_grad():
        ref, _ = m(idx, doc=doc, all_logits=True)
        for t in (1, 7, 13, 19):
            other = idx.clone()
            other[:, t:] = torch.randint(0, len(VOCAB), (2, 20 - t), generator=g)
            out, _ = m(other, doc=doc, all_logits=True)
            assert torch.allclose(ref[:, :t], out[:, :t], atol=1e-5, rtol=0), t
            assert not torch.allclose(ref[:, t:], out[:, t:])


def test_biases_change_the_model():
    m = make(attention='agglutinative')
    idx = torch.randint(0, len(VOCAB), (2, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a, _ = m(idx, all_logits=True)
        randomise_biases(m)
        b, _ = m(idx, all_logits=True)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize('kw', [{}, {'agglu_input_emb': True}, {'doc_mask': True}, {'arch': 'backpack', 'n_senses': 4}])
def test_zero_init_equals_standard(kw):
    std = make(seed=5, **{k: v for k, v in kw.items() if k != 'agglu_input_emb'})
    agg = make(seed=5, attention='agglutinative', **kw)
    s_std, s_agg = std.state_dict(), agg.state_dict()
    new = set(s_agg) - set(s_std)
    assert set(s_std) <= set(s_agg)
    assert all('agglu' in k for k in new) and new
    for k, v in s_std.items():
        assert torch.equal(v, s_agg[k]), k          # same seed -> the same weights
    for k in new:
        if s_agg[k].is_floating_point():
            assert torch.count_nonzero(s_agg[k]) == 0, k   # every new parameter starts at zero
    idx = torch.randint(0, len(VOCAB), (3, 24), generator=torch.Generator().manual_seed(6))
    doc = torch.tensor([[0] * 10 + [1] * 14] * 3) if kw.get('doc_mask') else None
    with torch.no_grad():
        a, _ = std(idx, doc=doc, all_logits=True)
        b, _ = agg(idx, doc=doc, all_logits=True)
        # the per-layer bias is exactly the causal/document 0/-inf mask at zero init ...
        base = (torch.ones(24, 24, dtype=torch.bool).tril()[None, None] if doc is None else
                torch.ones(24, 24, dtype=torch.bool).tril()[None, None] & (doc[:, None, :, None] == doc[:, None, None, :]))
        ag = agglutinative_inputs(idx, agg.trunk.agglu_word_start, agg.trunk.agglu_token_class, base)
        for mod in agg.modules():
            if isinstance(mod, Attention):
                assert torch.equal(mod.agglu_bias(ag), ag['base'].expand(3, 4, 24, 24))
    # ... so the logits differ only by SDPA's kernel choice (float mask vs is_causal): float32 rounding
    assert torch.allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize('arch', ['gpt', 'backpack'])
def test_gradients_reach_every_bias(arch):
    m = make(attention='agglutinative', agglu_input_emb=True, arch=arch, n_senses=4).train()
    idx = torch.randint(0, len(VOCAB), (2, 20), generator=torch.Generator().manual_seed(7))
    _, loss = m(idx[:, :-1], idx[:, 1:])
    assert loss.requires_grad and loss.grad_fn is not None
    loss.backward()
    names = [n for n, p in m.named_parameters() if 'agglu' in n]
    assert len(names) == 2 * 3 + 2
    for n, p in m.named_parameters():
        assert p.grad is not None, n
        if 'agglu' in n:
            assert p.grad.abs().sum() > 0, n


def test_standard_path_untouched_and_bias_table():
    std = make(seed=0)
    assert not any('agglu' in n for n, _ in std.named_parameters())
    assert not any('agglu' in n for n in std.state_dict())
    assert agglutinative_biases(std) == {}
    agg = make(seed=0, attention='agglutinative')
    randomise_biases(agg)
    b = agglutinative_biases(agg)
    assert sorted(b) == [1, 2] and len(b[1]['same_word']) == 4 and len(b[1]['class'][0]) == 4
    assert 'word_slope' in b[2] and len(format_agglutinative_biases(agg).splitlines()) == 1 + 2 * 4
    # padded vocabulary: ids beyond the tables are word-starting specials
    big = GPT(cfg(vocab_size=16, attention='agglutinative'))
    big.set_token_tables(WS.tolist(), TC.tolist())
    assert big.trunk.agglu_word_start[10:].tolist() == [1] * 6 and big.trunk.agglu_token_class[10:].tolist() == [3] * 6


def test_config_rejects_non_causal():
    with pytest.raises(ValueError):
        ModelConfig(arch='mdlm', attention='agglutinative')
    with pytest.raises(ValueError):
        ModelConfig(attention='morph')


def test_turkish_token_tables():
    from prepare.turkish import token_tables
    pieces = ['[UNK]', '[SEP]', '[MASK]', '▁ev', 'ler', 'de', 'k', ',', '▁', '12', 'nın', 'ğ', '▁kitap', 'ları',
              'LER', '.', '▁,', "'da", 'ler,', 'rk']
    ws, tc = token_tables(pieces, special_ids={0, 1, 2})
    assert ws == [1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 0]   # a bare digit run continues a word
    assert tc == [3, 3, 3, 0, 1, 1, 2, 3, 0, 3, 1, 2, 0, 1, 1, 3, 3, 1, 1, 2]


def _config_keys(path):
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


@pytest.mark.parametrize('suffix', ['', '_cpu'])
def test_turkish_configs_differ_only_in_attention(suffix):
    """The agglutinative arm is named after its gpt base and sets only its attention and out_dir."""
    agg = _config_keys(REPO / 'config' / f'agglutinative_turkish{suffix}.py')
    base = _config_keys(REPO / 'config' / f'gpt_turkish{suffix}.py')
    assert set(agg) == {'attention', 'out_dir'} and agg['out_dir'] != base['out_dir']
    assert agg['attention'] == 'agglutinative' and base.get('attention', 'standard') == 'standard'
    if not suffix:
        assert (base['n_layer'], base['n_head'], base['n_embd'], base['block_size']) == (6, 8, 512, 512)
        assert (base['learning_rate'], base['weight_decay']) == (1e-4, 0.01)


CONLLU = """# newdoc id = d1
# sent_id = s1
# text = Evlerde kaldık.
1	Evlerde	ev	NOUN	_	Case=Loc|Number=Plur	0	root	_	SpaceAfter=No
2	.	.	PUNCT	_	_	1	punct	_	_

# sent_id = s2
1	Kitabı	kitap	NOUN	_	Case=Acc	0	root	_	_
2	okudum	oku	VERB	_	_	1	obj	_	SpaceAfter=No
3	.	.	PUNCT	_	_	2	punct	_	_

# newdoc id = d2
# sent_id = s3
# text = Geldiler.
1	Geldiler	gel	VERB	_	_	0	root	_	SpaceAfter=No
2	.	.	PUNCT	_	_	1	punct	_	_
"""


def test_conllu_documents():
    from prepare.turkish import conllu_documents
    docs = conllu_documents(CONLLU, 'x')
    assert list(docs) == ['x:d1', 'x:d2'] and len(docs['x:d1']) == 2
    assert docs['x:d1'][1]['text'] == 'Kitabı okudum.'   # no '# text': forms joined by SpaceAfter
    # sent_id prefixes (turkish-treebanks: '<url>:S057') and, without ids, blocks of 20 sentences
    sents = ''.join(f"# sent_id = http://a/{k % 3}:S{k:03d}\n1\tev\tev\tNOUN\t_\t_\t0\troot\t_\t_\n\n" for k in range(9))
    assert sorted(conllu_documents(sents, 'w')) == ['w:http://a/0', 'w:http://a/1', 'w:http://a/2']
    plain = ''.join("1\tev\tev\tNOUN\t_\t_\t0\troot\t_\t_\n\n" for _ in range(45))
    assert [len(v) for v in conllu_documents(plain, 'p').values()] == [20, 20, 5]


WORDS_TR = ['ev', 'evler', 'evlerde', 'kitap', 'kitabı', 'kitaplar', 'okudum', 'geldiler', 'gidiyor', 'okulda',
            'okuldan', 'çocuklar', 'çocukların', 've', 'bir', 'bu', 'güzel', 'büyük', 'şehirde', 'yaşıyor']


def test_prepare_and_train_agglutinative(tmp_path):
    """prepare/turkish.py --input (txt) writes the token tables; train.py runs both arms on them."""
    import json
    import random
    import subprocess
    import sys
    from conftest import run_train
    rng = random.Random(0)
    src = tmp_path / 'src'
    src.mkdir()
    for d in range(12):
        (src / f'd{d:02d}.txt').write_text('\n'.join(' '.join(rng.choice(WORDS_TR) for _ in range(10)).capitalize() + '.'
                                                     for _ in range(12)), encoding='utf-8')
    data = tmp_path / 'data'
    r = subprocess.run([sys.executable, 'prepare/turkish.py', f'--input={src}', f'--out={data}', '--vocab_size=120'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    meta = json.loads((data / 'meta.json').read_text())
    assert len(meta['word_start']) == len(meta['token_class']) == meta['vocab_size']
    assert set(meta['token_class']) <= {0, 1, 2, 3} and 1 in meta['token_class']
    assert meta['source'].startswith('input')
    for att in ('agglutinative', 'standard'):
        out = tmp_path / f'out-{att}'
        run_train([f'--data_dir={data}', f'--out_dir={out}', f'--attention={att}', '--max_iters=3', '--eval_interval=3',
                   '--doc_mask=True', '--agglu_input_emb=True'])
        assert (out / 'last.pt').exists()
    # the token tables travel with the checkpoint (persistent buffers), so evaluation needs no meta hook
    ck = torch.load(tmp_path / 'out-agglutinative' / 'last.pt', map_location='cpu', weights_only=True)
    assert torch.equal(ck['model']['trunk.agglu_word_start'], torch.tensor(meta['word_start']))
    assert torch.equal(ck['model']['trunk.agglu_token_class'], torch.tensor(meta['token_class']))
    assert ck['model_args']['attention'] == 'agglutinative'
    # evaluate.py: bits per character beside bits per byte, and the learned biases per head
    import evaluate
    from evals.lm import token_chars
    chars = token_chars(data)
    pieces = json.loads((data / 'tokenizer.json').read_text())['model']['vocab']
    assert all(chars[i] == len(p) for i, (p, _) in enumerate(pieces) if p.startswith('▁'))
    res = evaluate.run_eval(str(tmp_path / 'out-agglutinative'), data_dir=str(data), split='val')
    assert res['val_bpc'] > 0 and sorted(res['agglutinative_biases']) == [1]
