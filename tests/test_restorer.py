"""Restoring as a scholar does: many gaps batched (restoration.beam_fill_many / restore_gaps_many give what the
one-gap search gives), scorers asked for the rows read only (score_rows), occlusion saliency checked against a
case computed by hand, and sample.py on whole ATF texts (--input, --output, --json, --tsv, --explain, --restored),
on the test fixtures and, when ../shared/data/oracc_atf is there, on every real ORACC ATF file."""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from atf import GAP, GAPN, parse_atf_line
from conftest import REPO, train_env
from restoration import (beam_fill, beam_fill_many, encoder_scorer, InfinigramScorer, NgramScorer,
                         occlusion_saliency, ProductScorer, restore_gaps, restore_gaps_many, score_rows, UnigramScorer)
from test_restoration import akk_ckpt, MASK, N_SPECIAL, tiny_encoder, V  # noqa: F401,F811  (akk_ckpt: a fixture)

ATF_DIR = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'oracc_atf'
FIX = Path(__file__).parent / 'fixtures' / 'akkadian'


# ----------------------------------------------------------------------------- the batched search

def test_beam_fill_many_is_beam_fill_per_job():
    model = tiny_encoder()
    sf = encoder_scorer(model, banned_ids=range(N_SPECIAL))
    jobs = [([5, 3, MASK, MASK, 4, 6], [2, 3]), ([2, MASK, 7], [1]), ([6, 3, 2, MASK, MASK, MASK, 4, 6], [3, 4, 5]),
            ([4, MASK, MASK, 3, 2, 7], [1, 2]), ([3, 3, 3], [])]
    many = beam_fill_many(sf, jobs, beam=4, banned_ids=range(N_SPECIAL), topk=3, max_tokens=20)  # several calls a round
    for (ids, pos), got in zip(jobs, many):
        want = beam_fill(sf, ids, pos, beam=4, banned_ids=range(N_SPECIAL), topk=3)
        assert [g[0] for g in got] == [w[0] for w in want]
        assert np.allclose([g[1] for g in got], [w[1] for w in want], atol=1e-5)


def test_restore_gaps_many_is_restore_gaps_per_sequence():
    model = tiny_encoder(1)
    sf = encoder_scorer(model, banned_ids=range(N_SPECIAL))
    items = [([2, 3, 0, 0, 4, 0, 5, 6], [(2, 2), (5, None)]), ([7, 0, 3, 4], [(1, None)]), ([2, 3, 4], [])]
    prior = np.log(np.array([1e-9, 0.5, 0.3, 0.2]))
    bar = type('Bar', (), {'n': 0, 'update': lambda self, k: setattr(self, 'n', self.n + k)})()
    many = restore_gaps_many(sf, items, mask_id=MASK, max_gap_len=3, beam=3, topk=4, banned_ids=range(N_SPECIAL),
                             window=6, length_logprior=prior, chunk=2, progress=bar)
    assert bar.n == 3
    for (ids, gaps), got in zip(items, many):
        want = restore_gaps(sf, ids, gaps, mask_id=MASK, max_gap_len=3, beam=3, topk=4, banned_ids=range(N_SPECIAL),
                            window=6, length_logprior=prior)
        assert [[(c[0], c[3]) for c in g] for g in got] == [[(c[0], c[3]) for c in g] for g in want]
        assert np.allclose([c[2] for g in got for c in g], [c[2] for g in want for c in g], atol=1e-5)


def test_scorers_asked_for_rows_give_the_rows_of_the_full_call():
    rng = np.random.default_rng(0)
    train = rng.integers(N_SPECIAL, V, 400)
    train[::37] = 0  # a separator now and then
    ng = NgramScorer(train, V, N_SPECIAL, MASK)
    scorers = {'unigram': UnigramScorer(train, V, N_SPECIAL), 'ngram': ng,
               'infinigram': InfinigramScorer(train, V, N_SPECIAL, MASK, ngram=ng),
               'model': encoder_scorer(tiny_encoder(), banned_ids=range(N_SPECIAL))}
    scorers['product'] = ProductScorer(list(scorers.values()), [0.5, 0.25, 1.0, 0.75], banned_ids=range(N_SPECIAL))
    x = torch.as_tensor(rng.integers(N_SPECIAL, V, (6, 12)))
    x[:, 4] = MASK
    x[1, 5] = MASK
    x[2, 0] = MASK
    at = torch.tensor([4, 5, 0, 4, 7, 4])  # row 4 reads a position that is no [MASK]
    for name, sf in scorers.items():
        full = sf(x)[torch.arange(6), at]
        got = score_rows(sf, x, at)
        assert got.shape == full.shape and torch.allclose(got, full, atol=1e-5), name


# ----------------------------------------------------------------------------- occlusion saliency, by hand

A, B, C = 2, 3, 4   # three real signs after the 2 specials [PAD] [MASK]; V = 5


def toy_ngram():
    """Train a b a b a c: unigram add-one p1 = (4, 3, 2) / 9; bigrams a->b 2, a->c 1, b->a 2."""
    return NgramScorer(np.array([A, B, A, B, A, C]), 5, 2, 1)


def test_occlusion_saliency_of_a_count_scorer_by_hand():
    """The bidirectional n-gram at a gap after `a` (the text's end on the right) is the Witten-Bell bigram
    p(s | a) = (c(a, s) + u p1(s)) / (C + u), C = 3, u = 2: b 8/15, c 13/45, a 8/45; with `a` hidden, only the
    unigram p1 is left: b 1/3, c 2/9, a 4/9. The drop of log p(b) is log(8/15) - log(1/3) = log(8/5) when `a` is
    hidden and exactly 0 for `c`, two signs away, which the n-gram never reads."""
    sf = toy_ngram()
    x = [C, A, 1]
    for sign, p_ctx, p_alone in ((B, 8 / 15, 1 / 3), (C, 13 / 45, 2 / 9), (A, 8 / 45, 4 / 9)):
        lp, drops = occlusion_saliency(sf, x, [2], [sign], mask_id=1, context=[0, 1])
        assert lp == pytest.approx(math.log(p_ctx), abs=1e-6)
        assert drops == pytest.approx([0.0, math.log(p_ctx / p_alone)], abs=1e-6)
    # a two-sign filling is the chain rule of beam_fill: b after `a` (gap on its right: the left side alone), then `a`
    # after the filled b (b -> a: C = 2, u = 1: (2 + 4/9) / 3 = 22/27); hiding `a` only moves the first term
    lp, drops = occlusion_saliency(sf, [C, A, 1, 1], [2, 3], [B, A], mask_id=1, context=[0, 1])
    assert lp == pytest.approx(math.log(8 / 15) + math.log(22 / 27), abs=1e-6)
    assert drops == pytest.approx([0.0, math.log(8 / 5)], abs=1e-6)


def test_occlusion_saliency_of_a_product_by_hand():
    """The product of the n-gram and the unigram (weights 1, 1), normalised over the real signs: with `a` in the
    context p(b) = (8/15)(1/3) / [(8/45)(4/9) + (8/15)(1/3) + (13/45)(2/9)] = 36/65; hidden, p1^2 normalised:
    9/29. Drop log(36/65) - log(9/29) = log(116/65). A weight 0 leaves the n-gram's own saliency."""
    ng = toy_ngram()
    uni = UnigramScorer(np.array([A, B, A, B, A, C]), 5, 2)
    both = ProductScorer([ng, uni], [1.0, 1.0], banned_ids=[0, 1])
    _, drops = occlusion_saliency(both, [C, A, 1], [2], [B], mask_id=1, context=[0, 1])
    assert drops == pytest.approx([0.0, math.log(116 / 65)], abs=1e-5)
    alone = ProductScorer([ng, uni], [1.0, 0.0], banned_ids=[0, 1])
    _, drops = occlusion_saliency(alone, [C, A, 1], [2], [B], mask_id=1, context=[0, 1])
    assert drops == pytest.approx([0.0, math.log(8 / 5)], abs=1e-5)


# ----------------------------------------------------------------------------- sample.py on lines and whole texts

def sample(out, *args, check=True):
    cmd = [sys.executable, 'sample.py', f'--out_dir={out}', '--beam=3', '--max_gap_len=3', '--candidates=3', *args]
    r = subprocess.run(cmd, cwd=REPO, env=train_env(), capture_output=True, timeout=300)
    r.stdout, r.stderr = r.stdout.decode('utf-8'), r.stderr.decode('utf-8')
    if check:
        assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_text_line_is_printed_as_written_with_saliency(akk_ckpt):
    line = '{m}aš-šur-[x x] a-na LUGAL [...] be-li₂-ia'
    r = sample(akk_ckpt, f'--text={line}', '--explain')
    out = r.stdout.splitlines()
    assert out[0] == line                                               # echoed as typed, not {m}-aš-šur-x x
    best = next(l for l in out if l.startswith('best: '))[6:]
    assert best.startswith('{m}aš-šur-[') and '] a-na LUGAL [' in best and best.endswith('] be-li₂-ia')
    assert sum(l.strip().startswith('why: ') for l in out) == 6         # every candidate of the 2 gaps
    j = json.loads(sample(akk_ckpt, f'--text={line}', '--explain', '--json').stdout)
    toks = j['signs']
    for g in j['gaps']:
        for c in g['candidates']:
            sal = c['saliency']
            assert sal and all(math.isfinite(s['drop']) for s in sal)
            idx = {s['index'] for s in sal}                             # every real context sign, never the gap
            gap = set(range(g['start'], g['start'] + (g['length'] or 1)))
            assert idx == {i for i, t in enumerate(toks) if not t.startswith('[')} - gap
            assert not re.search('[a-zšṣṭ][0-9]', c['atf']) and '}-' not in c['atf'] and '-{' not in c['atf']
    assert j['best'] == best


def round_trip_checks(src, out, records):
    """The written ATF differs from the input only inside the gaps and by the #note: lines under restored lines: each
    input line, cut at its gaps' characters (widened by the brackets, half brackets, (x) and marks around them), is
    its written line with one restoration (signs, no space, brackets at most at its ends) in place of each cut."""
    ours = ('#note: restored gap ', '#note: why gap ')          # the notes the restorer writes (the file has its own)
    kept = [l for l in out.splitlines(keepends=True) if not l.startswith(ours)]
    assert len(kept) == len(src.splitlines(keepends=True))
    assert sum(l.startswith(ours[0]) for l in out.splitlines()) == len({r['line'] for r in records})  # one per line
    for no, (a, b) in enumerate(zip(src.splitlines(keepends=True), kept), 1):
        regions = []
        for r in sorted((r for r in records if r['line'] == no and r['column'] is not None), key=lambda r: r['column']):
            c0, c1 = r['column'], r['column'] + len(r['original'])
            while c0 > 0 and a[c0 - 1] in '[⸢˹(':
                c0 -= 1
            while c1 < len(a) and a[c1] in ']⸣˺)#?!*':
                c1 += 1
            regions.append((c0, c1))
        pattern, at = '', 0
        for c0, c1 in regions:
            pattern += re.escape(a[at:c0]) + r'\[?[^\s\[\]]+\]?'
            at = c1
        assert re.fullmatch(pattern + re.escape(a[at:]), b), (no, a, b)


def test_input_writes_the_atf_back_and_round_trips_a_text_without_gaps(akk_ckpt, tmp_path):
    src = (FIX / 'sample.atf').read_text(encoding='utf-8')
    f = tmp_path / 'letters.atf'
    f.write_bytes(src.encode('utf-8'))
    r = sample(akk_ckpt, f'--input={f}')
    out = r.stdout
    recs = [json.loads(l) for l in sample(akk_ckpt, f'--input={f}', '--json').stdout.splitlines()]
    assert [(x['text'], x['line'], x['original'], x['length']) for x in recs] == [
        ('P100001', 11, 'x x', 2), ('P100001', 11, 'x', 1), ('P100001', 11, '...', None),
        ('P100001', 12, '...', None), ('P100002', 18, '...', None)]
    assert all(len(x['candidates']) == 3 and x['truth'] is None for x in recs)
    assert all(0 < c['p'] <= 1 for x in recs for c in x['candidates'])
    round_trip_checks(src, out, recs)
    notes = [l for l in out.splitlines() if l.startswith('#note: restored')]
    assert len(notes) == 3 and notes[0].startswith('#note: restored gap 1 (x x): ')
    line11 = out.splitlines()[10]
    assert line11.startswith("1'. [") and '] ša₂ [' in line11 and 'ši-pir {d}AMAR.UTU' in line11
    assert not [t for t, _ in parse_atf_line(line11.split(' ', 1)[1]) if t in (GAP, GAPN)]
    assert 'restored 5 gap(s) on 3 line(s) of 2 text(s)' in r.stderr
    # a text without gaps comes back byte for byte: CRLF endings, no final newline, a BOM
    plain = '\ufeff&P1 = plain\r\n1. a-na LUGAL be-li₂-ia\r\n#note: mine\r\n2. ARAD-ka'
    g = tmp_path / 'plain.atf'
    g.write_bytes(plain.encode('utf-8'))
    r = sample(akk_ckpt, f'--input={g}')
    assert r.stdout.encode('utf-8') == plain.encode('utf-8')
    # --output: the same text, written atomically; never over the input
    o = tmp_path / 'out' / 'restored.atf'
    o.parent.mkdir()
    sample(akk_ckpt, f'--input={f}', f'--output={o}')
    assert o.read_text(encoding='utf-8') == out and f.read_text(encoding='utf-8') == src
    assert [p.name for p in o.parent.iterdir()] == ['restored.atf']
    r = sample(akk_ckpt, f'--input={f}', f'--output={f}', check=False)
    assert r.returncode == 1 and 'the input itself' in r.stderr and f.read_text(encoding='utf-8') == src


def test_input_tsv_explain_and_the_editors_restorations(akk_ckpt, tmp_path):
    f = tmp_path / 't.atf'
    f.write_text('&P9 = t\n1. [a-na] LUGAL x be-li₂-ia\n2. ARAD-ka [...]\n', encoding='utf-8')
    tsv = sample(akk_ckpt, f'--input={f}', '--tsv').stdout.splitlines()
    assert tsv[0].split('\t') == ['text', 'line', 'label', 'position', 'length', 'original', 'best', 'p', 'candidates',
                                  'truth', 'truth_rank']
    rows = [r.split('\t') for r in tsv[1:]]
    assert [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows] == [('P9', '2', '1.', '3', '1', 'x'),
                                                                    ('P9', '3', '2.', '2', 'unknown', '...')]
    recs = [json.loads(l) for l in sample(akk_ckpt, f'--input={f}', '--json', '--restored=True',
                                          '--explain').stdout.splitlines()]
    ed = recs[0]
    assert ed['kind'] == 'editor' and ed['truth'] == ['a', 'na'] and ed['length'] == 2 and ed['truth_rank'] >= 1
    assert 0 < ed['truth_p'] <= 1 and all(c['saliency'] for r in recs for c in r['candidates'])
    atf = sample(akk_ckpt, f'--input={f}', '--restored=True', '--explain').stdout
    assert atf.splitlines()[1].startswith('1. [a-na] LUGAL [')            # the editor's reading is not overwritten
    assert '#note: restored gap 1 (editor: a-na, rank ' in atf and '#note: why gap 1 ' in atf


def test_input_refuses_what_it_cannot_read(akk_ckpt, tmp_path):
    bad = tmp_path / 'latin1.atf'
    bad.write_bytes('1. a-na b\xe9\n'.encode('latin-1'))
    for args, says in (([f'--input={bad}'], 'not UTF-8'), ([f'--input={tmp_path / "none.atf"}'], 'not found'),
                       ([f'--input={bad}', '--json', '--tsv'], 'choose one'), (['--output=x.atf', '--text=a x'], '--input')):
        r = sample(akk_ckpt, *args, check=False)
        assert r.returncode == 1 and says in r.stderr.strip().splitlines()[-1] and 'Traceback' not in r.stderr


@pytest.mark.skipif(not ATF_DIR.is_dir(), reason='real ORACC ATF folder (../shared/data/oracc_atf) not present')
def test_every_real_atf_file_is_restored_and_changed_only_in_its_gaps(akk_ckpt):
    """sample.py --input's path (edition.read_edition -> Restorer.texts -> edition_out), in this process with the
    tiny run loaded once, on every real ATF file: every gap restored, the written ATF different from the file only
    inside the gaps and by the #note: lines, and read again it has no gap left but those no character stands for."""
    from checkpoint import load_run
    from edition import Spelling, read_edition
    from restorer import edition_out, Restorer
    model, ckpt, data_dir = load_run(str(akk_ckpt), 'ckpt.pt', 'cpu')
    r = Restorer(model, ckpt, data_dir, cache_dir=str(akk_ckpt), ckpt_path=str(akk_ckpt / 'ckpt.pt'), scorer='ngram',
                 beam=2, max_gap_len=2, candidates=2)
    total = 0
    for f in sorted(ATF_DIR.glob('*.atf')):
        src = f.read_text(encoding='utf-8')
        sp = Spelling.of(src)
        raws, texts = read_edition(src)
        recs = r.texts(texts, spelling=sp)
        assert len(recs) == sum(len(l.gaps) for t in texts for l in t.lines), f.name
        assert all(rec['candidates'] for rec in recs)
        out, written = edition_out(raws, texts, recs, sp)
        round_trip_checks(src, out, recs)
        unplaced = sum(rec['column'] is None for rec in recs)
        assert written == len(recs) - unplaced
        _, again = read_edition(out)       # read again: no gap left but those no character of the line stands for
        assert sum(len(l.gaps) for t in again for l in t.lines) == unplaced, f.name
        total += len(recs)
    assert total > 1000


def test_input_reads_an_oracc_corpusjson_text(akk_ckpt):
    recs = [json.loads(l) for l in sample(akk_ckpt, f'--input={FIX / "corpusjson" / "P000001.json"}', '--json').stdout.splitlines()]
    assert recs and all(r['text'].endswith('P000001') and r['candidates'] for r in recs)
    out = sample(akk_ckpt, f'--input={FIX / "corpusjson" / "P000001.json"}').stdout.splitlines()
    assert out[0].startswith('&P000001 = ') and out[2].startswith('1. ') and out[3].startswith('#note: restored gap 1')
