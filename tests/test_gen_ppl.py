"""Generative perplexity (evals/mdlm.generative_ppl): under the project's gpt it is exp of the gpt's mean
-log p of the samples after the separator, recomputed here by hand; a Hugging Face judge without
`transformers` ends with one line saying so."""
import json
import math
import sys

import pytest
import torch

from evals.mdlm import generative_ppl
from model import build_model, ModelConfig
from sampling import mdlm_sample


def test_gen_ppl_under_the_projects_gpt(char_data, tmp_path, capsys):
    V = json.loads((char_data / 'meta.json').read_text())['vocab_size']
    sep = json.loads((char_data / 'meta.json').read_text())['sep_id']
    torch.manual_seed(0)
    mdlm = build_model(ModelConfig(arch='mdlm', vocab_size=V + 1, mask_id=V, block_size=12, n_layer=1, n_head=2,
                                   n_embd=16, cond_dim=8, bias=False, pos='rope')).eval()
    args = dict(arch='gpt', vocab_size=V, block_size=8, n_layer=1, n_head=2, n_embd=16)
    gpt = build_model(ModelConfig(**args)).eval()
    torch.save({'model': gpt.state_dict(), 'model_args': ModelConfig(**args).to_dict(), 'config': {}}, tmp_path / 'g.pt')
    res = generative_ppl(mdlm, str(tmp_path / 'g.pt'), str(char_data), n_samples=3, steps=8, seed=5)
    assert 'judge: gpt:' in capsys.readouterr().out and res['gen_judge_hf'] == 0
    x, _ = mdlm_sample(mdlm, torch.full((3, 12), V), 8, True, torch.Generator().manual_seed(5))
    seq = torch.cat([torch.full((3, 1), sep), x], 1)
    nll = 0.0
    with torch.no_grad():
        for c in (0, 8):  # windows of the gpt's context of 8, each predicting the next 8 (or 4) tokens
            inp, tgt = seq[:, c:c + 8], seq[:, c + 1:c + 9]
            lp = torch.log_softmax(gpt(inp[:, :tgt.shape[1]], all_logits=True)[0].double(), -1)
            nll -= lp.gather(-1, tgt[..., None]).sum().item()
    assert res['gen_ppl'] == pytest.approx(math.exp(nll / 36), rel=1e-9)  # the same computation, float64 sums


def test_hf_judge_without_transformers_says_so(char_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'transformers', None)  # `import transformers` fails as on a machine without it
    mdlm = build_model(ModelConfig(arch='mdlm', vocab_size=40, mask_id=39, block_size=8, n_layer=1, n_head=2,
                                   n_embd=16, cond_dim=8, bias=False, pos='rope')).eval()
    with pytest.raises(SystemExit):
        generative_ppl(mdlm, '', str(char_data), n_samples=1, steps=2, judge=str(tmp_path))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'transformers' in err[0] and 'not installed' in err[0]
