"""TurkMorfBench forced-choice scoring in evals/turkish.py: length normalisation, the tie rule (ties are wrong),
the chance level and the prompt/candidate token boundary, with a toy tokenizer and a fake causal model whose
log-probabilities are known. No network: the items are built here."""
import math

import pytest
import torch

from evals.turkish import TMB_PROMPT, turkmorfbench

CHARS = sorted(set(TMB_PROMPT.format(stem='') + "abcdeklmnrstvxyz'ıöüçğş"))
SEP = 0


class CharTok:
    """One id per character (ids from 1; 0 is the separator)."""
    def encode(self, text):
        return [CHARS.index(ch) + 1 for ch in text]


class CostModel:
    """Causal model with the evaluate_split call signature: model(x, y=None, doc=None) -> (logits, None).
    Every next token gets log-probability cost[token] (a fixed distribution, whatever the context)."""
    def __init__(self, logp_of_char):
        V = len(CHARS) + 1
        lp = torch.full((V,), -50.0)
        for ch, v in logp_of_char.items():
            lp[CHARS.index(ch) + 1] = v
        self.lp = lp
        self.calls = 0

    def __call__(self, x, y=None, doc=None):
        self.calls += 1
        # logits whose log_softmax is exactly self.lp (up to the mass of the -50 entries)
        return self.lp.expand(*x.shape, -1).clone(), None


def item(gold, options, stem='ev', bucket='ad_cekimi', real=True):
    return {'stem': stem, 'gold': gold, 'options': options, 'bucket': bucket, 'real': real}


def test_length_normalisation_prefers_per_char_score():
    # 'a' costs -1 per char, 'b' -0.6: 'aa' sums -2 (per char -1), 'bbbb' sums -2.4 (per char -0.6).
    # The raw sum prefers 'aa'; the per-character score prefers 'bbbb'.
    m = CostModel({'a': math.log(0.3), 'b': math.log(0.5)})
    tok = CharTok()
    r = turkmorfbench(m, tok, [item('bbbb', ['aa', 'bbbb'])], sep_id=SEP)
    assert r['turkmorfbench_acc'] == 1.0
    r = turkmorfbench(m, tok, [item('aa', ['aa', 'bbbb'])], sep_id=SEP)
    assert r['turkmorfbench_acc'] == 0.0  # 'aa' has the higher sum but the lower per-character score


def test_tie_counts_as_wrong():
    m = CostModel({'a': math.log(0.3), 'b': math.log(0.3)})
    r = turkmorfbench(m, CharTok(), [item('ab', ['ab', 'ba', 'aaa'])], sep_id=SEP)
    assert r['turkmorfbench_acc'] == 0.0


def test_chance_level_and_counts():
    m = CostModel({'a': -0.1, 'b': -3.0})
    items = [item('a', ['a', 'b']), item('a', ['b', 'a', 'bb', 'bbb']),
             item('b', ['a', 'b', 'aa'], bucket='istisna_kisaltma', real=False)]
    r = turkmorfbench(m, CharTok(), items, sep_id=SEP)
    assert r['turkmorfbench_n'] == 3
    assert r['turkmorfbench_chance'] == pytest.approx((1 / 2 + 1 / 4 + 1 / 3) / 3)
    assert r['turkmorfbench_acc'] == pytest.approx(2 / 3)
    assert r['turkmorfbench_exceptions_acc'] == 0.0 and r['turkmorfbench_exceptions_n'] == 1
    assert r['turkmorfbench_regular_acc'] == 1.0 and r['turkmorfbench_nonce_n'] == 1


def test_only_candidate_tokens_are_scored():
    # prompt characters that are expensive must not change the per-character score of the candidate:
    # with a stem of 'zzzz' (very unlikely) the answer is the same as with 'ev'.
    m = CostModel({'a': math.log(0.3), 'b': math.log(0.5), 'z': -40.0})
    for stem in ('ev', 'zzzz'):
        r = turkmorfbench(m, CharTok(), [item('bbbb', ['aa', 'bbbb'], stem=stem)], sep_id=SEP)
        assert r['turkmorfbench_acc'] == 1.0


class MergeTok(CharTok):
    """Merges a trailing ' ' with the next character into one id (like a Metaspace '▁x' piece), so the ids of
    prompt+candidate are not the prompt's ids plus more."""
    def encode(self, text):
        ids = super().encode(text)
        out, i = [], 0
        while i < len(ids):
            if text[i] == ' ' and i + 1 < len(text):
                out.append(100 + ids[i + 1])
                i += 2
            else:
                out.append(ids[i])
                i += 1
        return out


def test_longest_common_prefix_when_tokenization_merges():
    # ids >= 100 (merged pieces) are outside CostModel's vocabulary; give it a wider one
    class Wide(CostModel):
        def __call__(self, x, y=None, doc=None):
            lp = torch.full((x.shape[0], x.shape[1], 200), -5.0)
            lp[..., :self.lp.numel()] = self.lp
            return lp, None
    m = Wide({'a': math.log(0.3), 'b': math.log(0.5)})
    r = turkmorfbench(m, MergeTok(), [item('bbbb', ['aa', 'bbbb'])], sep_id=SEP)
    # each candidate: one merged piece (-5) + its other chars; per char: aa -> (-5 + log .3)/2, bbbb -> (-5 + 3 log .5)/4
    assert r['turkmorfbench_acc'] == 1.0 and r['turkmorfbench_n'] == 1


def test_batching_does_not_change_the_result():
    m = CostModel({'a': -0.2, 'b': -0.9, 'k': -0.5})
    items = [item('ab', ['ab', 'bbb', 'k']), item('kk', ['a', 'kk']), item('bk', ['bk', 'akab'])] * 3
    r1 = turkmorfbench(m, CharTok(), items, sep_id=SEP, batch_size=1)
    r2 = turkmorfbench(m, CharTok(), items, sep_id=SEP, batch_size=64)
    assert r1 == r2


def test_real_model_runs():
    from model import ModelConfig, build_model
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=len(CHARS) + 1, block_size=16, n_layer=1, n_head=2, n_embd=16,
                                    dropout=0.0)).eval()
    items = [item("ev'e", ["ev'e", "ev'a", 'eve'], stem='evxyzkmnr')]
    r = turkmorfbench(model, CharTok(), items, block_size=16, sep_id=SEP)  # prompt longer than block_size: cut
    assert r['turkmorfbench_n'] == 1 and r['turkmorfbench_acc'] in (0.0, 1.0)
