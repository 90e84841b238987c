"""config/ holds only what differs (README, Layout): a variant is named after its base on the command line. Each
documented command resolves, through train.py's own defaults and configurator.py, to exactly the values frozen in
tests/fixtures/resolved_configs.json before the configs were restructured; the README's commands and the configs'
usage lines are all in the map below, every config file is used by one, and no config sets a key its arch ignores."""
import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from config_commands import commands_in, CONFIG, PLACEHOLDER, REPO, resolve, train_defaults  # noqa: E402

FROZEN = json.loads((REPO / 'tests' / 'fixtures' / 'resolved_configs.json').read_text())

T, B = 'python train.py', 'python bench.py'
LIT, LIT_CPU = 'config/gpt_shakespeare.py', 'config/gpt_shakespeare_cpu.py'
# the command as it was (the key of the frozen snapshot) -> the command that must give the same configuration now
NEW = {
    f'{T} config/train_akkadian_cpu.py': f'{T} config/train_akkadian_cpu.py',
    f'{T} config/train_akkadian_oracc_cpu.py': f'{T} config/train_akkadian_oracc_cpu.py',  # added after the restructure
    f'{T} config/shakespeare_char_cpu.py': f'{T} config/gpt_shakespeare_char_cpu.py',
    f'{T} config/shakespeare_char_cpu.py --init_from=resume': f'{T} config/gpt_shakespeare_char_cpu.py --init_from=resume',
    'torchrun --standalone --nproc_per_node=2 train.py config/shakespeare_char_cpu.py --gradient_accumulation_steps=2':
        'torchrun --standalone --nproc_per_node=2 train.py config/gpt_shakespeare_char_cpu.py --gradient_accumulation_steps=2',
    f'{T} config/train_akkadian_cpu.py --tensorboard_log=True': f'{T} config/train_akkadian_cpu.py --tensorboard_log=True',
    f'{T} config/train_akkadian.py --wandb_log=True --wandb_project=akkadian --wandb_run_name=aeneas-twin':
        f'{T} config/train_akkadian.py --wandb_log=True --wandb_project=akkadian --wandb_run_name=aeneas-twin',
    f'{T} config/finetune_mmbert_akkadian.py': f'{T} config/finetune_mmbert_akkadian.py',
    f'{T} config/finetune_hf_tiny_cpu.py --save_artifacts=True': f'{T} config/finetune_hf_tiny_cpu.py --save_artifacts=True',
    f'{T} config/train_akkadian_cpu.py --max_iters=600 --eval_interval=200':
        f'{T} config/train_akkadian_cpu.py --max_iters=600 --eval_interval=200',
    f'{T} config/train_akkadian.py': f'{T} config/train_akkadian.py',
    f'{T} config/train_akkadian_cpu.py --save_artifacts=True --out_dir=out-akk-art':
        f'{T} config/train_akkadian_cpu.py --save_artifacts=True --out_dir=out-akk-art',
    f'{T} config/mdlm_cpu.py': f'{T} config/mdlm_cpu.py',
    f'{T} config/mdlm_atat_cpu.py': f'{T} config/mdlm_cpu.py config/mdlm_atat_cpu.py',
    f'{T} config/gpt_wikitext_cpu.py': f'{T} config/gpt_wikitext_cpu.py',
    f'{T} config/mdlm.py': f'{T} config/mdlm.py',
    'torchrun --standalone --nproc_per_node=6 train.py config/mdlm.py --batch_size=4 --gradient_accumulation_steps=6':
        'torchrun --standalone --nproc_per_node=6 train.py config/mdlm.py --batch_size=4 --gradient_accumulation_steps=6',
    'torchrun --standalone --nproc_per_node=6 train.py config/mdlm_owt.py':
        'torchrun --standalone --nproc_per_node=6 train.py config/mdlm.py config/mdlm_owt.py',
    f'{T} config/backpack_europarl_cpu.py': f'{T} config/gpt_europarl_cpu.py config/backpack_europarl_cpu.py',
    f'{T} config/transformer_europarl_cpu.py': f'{T} config/gpt_europarl_cpu.py',
    f'{T} config/backpack_europarl.py --init_from=PATH/backpack-gpt2.bin':
        f'{T} config/gpt_europarl.py config/backpack_europarl.py --init_from=PATH/backpack-gpt2.bin',
    f'{T} config/agglutinative_turkish_cpu.py': f'{T} config/gpt_turkish_cpu.py config/agglutinative_turkish_cpu.py',
    f'{T} config/baseline_turkish_cpu.py': f'{T} config/gpt_turkish_cpu.py',
    f'{T} config/atlas_shakespeare_cpu.py': f'{T} {LIT_CPU} config/atlas_shakespeare_cpu.py',
    f'{T} config/gpt_shakespeare_cpu.py': f'{T} {LIT_CPU}',
    f'{T} config/atlas_dumas_cpu.py --dataset=literature_fr_enbpe --out_dir=out-atlas-fr-enbpe-cpu':
        f'{T} {LIT_CPU} config/atlas_shakespeare_cpu.py --dataset=literature_fr_enbpe --out_dir=out-atlas-fr-enbpe-cpu',
    f'{T} config/train_akkadian.py --batch_size=auto': f'{T} config/train_akkadian.py --batch_size=auto',
    'torchrun --standalone --nproc_per_node=8 train.py config/train_akkadian.py':
        'torchrun --standalone --nproc_per_node=8 train.py config/train_akkadian.py',
    'config/train_akkadian_cpu.py --tensorboard_log=True': 'config/train_akkadian_cpu.py --tensorboard_log=True',
    'config/train_akkadian_cpu.py --n_layer=4 --mask_rate_max=0 --artifact_layers=0,1,2,3,4 --max_iters=1000 --num_threads=1':
        'config/train_akkadian_cpu.py --n_layer=4 --mask_rate_max=0 --artifact_layers=0,1,2,3,4 --max_iters=1000 --num_threads=1',
    'bench.py config/mdlm_cpu.py --sample --sample_batches=1,8': 'bench.py config/mdlm_cpu.py --sample --sample_batches=1,8',
    f'{T} config/agglutinative_turkish.py': f'{T} config/gpt_turkish.py config/agglutinative_turkish.py',
    # French: the Shakespeare configs on the French corpus (a --dataset, as the tokenizer variants)
    f'{T} config/atlas_dumas.py':
        f'{T} {LIT} config/atlas_shakespeare.py --dataset=literature_fr_balanced --out_dir=out-atlas-fr-balanced',
    f'{T} config/atlas_dumas_cpu.py':
        f'{T} {LIT_CPU} config/atlas_shakespeare_cpu.py --dataset=literature_fr_balanced --out_dir=out-atlas-fr-balanced-cpu',
    f'{T} config/atlas_shakespeare.py': f'{T} {LIT} config/atlas_shakespeare.py',
    f'{T} config/backpack_europarl.py': f'{T} config/gpt_europarl.py config/backpack_europarl.py',
    f'{T} config/baseline_turkish.py': f'{T} config/gpt_turkish.py',
    f'{T} config/finetune_hf_tiny_cpu.py': f'{T} config/finetune_hf_tiny_cpu.py',
    f'{T} config/finetune_mmbert_akkadian.py --init_from=hf:DIR': f'{T} config/finetune_mmbert_akkadian.py --init_from=hf:DIR',
    f'{T} config/gpt_dumas.py': f'{T} {LIT} --dataset=literature_fr_balanced --out_dir=out-gpt-fr-balanced',
    f'{T} config/gpt_dumas_cpu.py': f'{T} {LIT_CPU} --dataset=literature_fr_balanced --out_dir=out-gpt-fr-balanced-cpu',
    f'{T} config/gpt_shakespeare.py': f'{T} {LIT}',
    f'{T} config/mdlm_atat.py': f'{T} config/mdlm.py config/mdlm_atat.py',
    'torchrun --standalone --nproc_per_node=6 train.py config/mdlm_atat.py --batch_size=4 --gradient_accumulation_steps=6':
        'torchrun --standalone --nproc_per_node=6 train.py config/mdlm.py config/mdlm_atat.py --batch_size=4 '
        '--gradient_accumulation_steps=6',
    'torchrun --standalone --nproc_per_node=2 train.py config/mdlm_atat_cpu.py':
        'torchrun --standalone --nproc_per_node=2 train.py config/mdlm_cpu.py config/mdlm_atat_cpu.py',
    'torchrun --standalone --nproc_per_node=2 train.py config/mdlm_cpu.py':
        'torchrun --standalone --nproc_per_node=2 train.py config/mdlm_cpu.py',
    f'{T} config/mdlm_owt.py': f'{T} config/mdlm.py config/mdlm_owt.py',
    f'{T} config/transformer_europarl.py': f'{T} config/gpt_europarl.py',
    f'{B} config/bench_gpt.py': f'{B} config/bench_gpt.py',
    f'{B} config/bench_encoder.py': f'{B} config/bench_encoder.py',
    f'{B} config/bench_mdlm.py': f'{B} config/bench_mdlm.py',
    f'{B} config/bench_atlas.py': f'{B} config/bench_atlas.py',
}

# The model keys of one arch (model.ModelConfig's groups): a config for another arch must not set them.
ATLAS_KEYS = {'atlas_mode', 'mem_depth', 'mem_key_dim', 'mem_hidden', 'mem_poly', 'mem_window', 'mem_chunk', 'mem_muon',
              'mem_ns_steps', 'mem_muon_scope', 'mem_lr', 'mem_conv'}
OWN_KEYS = {'atlas': ATLAS_KEYS,
            'mdlm': {'cond_dim', 'time_cond', 'importance', 'imp_n_layer', 'imp_n_embd', 'imp_n_head', 'importance_weight',
                     'adaptive_masking', 'adaptive_strength', 'curriculum', 'curriculum_phases'},
            'backpack': {'n_senses'},
            'encoder': {'mlm_logit_budget'}}
# The values that changed for a key its arch ignores: the old gpt twins of the atlas configs carried atlas's memory
# keys; now they keep train.py's defaults (test_gpt_ignores_the_memory_keys checks that gpt reads none of them).
IGNORED = {'gpt': ATLAS_KEYS}



def manual():
    """The manual as one text: README.md and its pages under docs/."""
    return '\n'.join(p.read_text() for p in [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))])

def test_the_map_covers_the_frozen_snapshot():
    assert set(NEW) == set(FROZEN)


@pytest.fixture(scope='module')
def defaults():
    ns = train_defaults()
    from configurator import config_keys
    return {k: ns[k] for k in config_keys(ns)}


@pytest.mark.parametrize('old', list(NEW))
def test_new_command_resolves_to_the_frozen_values(old, defaults):
    frozen = FROZEN[old]
    config, given = resolve(NEW[old])
    assert list(config) == list(frozen), "train.py's config keys changed"
    ignored = IGNORED.get(config['arch'], set())
    for k, v in frozen.items():
        if k in ignored and config[k] != v:
            assert k not in given and config[k] == defaults[k], (k, config[k], v)
            continue
        assert config[k] == v and type(config[k]) is type(v), f"{NEW[old]}: {k} = {config[k]!r}, was {v!r}"


def test_a_changed_value_is_caught(tmp_path):
    """The comparison above is not vacuous: one value changed in a config file fails it."""
    src = (REPO / 'config' / 'mdlm_atat_cpu.py').read_text().replace('curriculum = True', 'curriculum = False')
    f = tmp_path / 'mdlm_atat_cpu.py'
    f.write_text(src)
    frozen = FROZEN[f'{T} config/mdlm_atat_cpu.py']
    from configurator import apply_config
    config = apply_config(train_defaults(), [str(REPO / 'config' / 'mdlm_cpu.py'), str(f)], auto_keys=('batch_size',))
    assert {k for k in frozen if config[k] != frozen[k]} == {'curriculum'}


@pytest.mark.parametrize('twin', ['config/gpt_shakespeare.py', 'config/gpt_shakespeare_cpu.py'])
def test_gpt_ignores_the_memory_keys(twin):
    """The gpt baselines lost atlas's memory keys: with them set as before or left at the defaults, gpt builds the
    same parameters and computes the same logits."""
    import torch
    from model import build_model, ModelConfig
    old = FROZEN[f'{T} {twin}']
    small = dict(arch='gpt', vocab_size=32, block_size=16, n_layer=1, n_head=2, n_embd=16, window=8, pos='rope',
                 norm='rmsnorm', bias=False)
    x = torch.randint(0, 32, (2, 16), generator=torch.Generator().manual_seed(0))
    out = []
    for mem in ({}, {k: old[k] for k in ATLAS_KEYS}):
        torch.manual_seed(0)
        m = build_model(ModelConfig(**small, **mem)).eval()
        with torch.no_grad():
            logits = m(x)[0]
        out.append(({k: v.shape for k, v in m.state_dict().items()}, m.state_dict(), logits))
    assert {k: old[k] for k in ATLAS_KEYS} != {k: getattr(ModelConfig(), k) for k in ATLAS_KEYS}
    assert out[0][0] == out[1][0]
    for k in out[0][1]:  # same seed, same shapes: equal up to float32 rounding on any CPU
        torch.testing.assert_close(out[0][1][k], out[1][1][k], rtol=1e-6, atol=1e-7, msg=k)
    torch.testing.assert_close(out[0][2], out[1][2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('new', sorted(set(NEW.values())))
def test_no_config_sets_a_key_its_arch_ignores(new):
    config, given = resolve(new)
    foreign = set().union(*(keys for arch, keys in OWN_KEYS.items() if arch != config['arch']))
    assert not given & foreign, f"{new}: sets {sorted(given & foreign)}, which arch {config['arch']} does not read"


def test_every_readme_command_is_mapped():
    """A new documented command needs its line in NEW (and so a frozen configuration)."""
    readme = commands_in(manual())
    assert readme, "no config command found in README.md or docs/"
    missing = [c for c in readme if c not in NEW.values()]
    assert not missing, f"README commands missing from tests/test_configs.py NEW: {missing}"


def test_every_usage_line_in_a_config_is_mapped():
    for f in sorted((REPO / 'config').glob('*.py')):
        missing = [c for c in commands_in(f.read_text(), comments=True) if c not in NEW.values()]
        assert not missing, f"{f.name}: usage lines missing from NEW: {missing}"


def test_every_config_file_is_used_by_a_documented_command():
    sys.path.insert(0, str(REPO))
    import bench
    used = {t for c in commands_in(manual()) for t in c.split() if CONFIG.match(t)}
    used |= set(bench.ALL_CONFIGS.values())  # python bench.py --all (docs/performance.md)
    files = {f'config/{f.name}' for f in (REPO / 'config').glob('*.py')}
    assert files - used == set(), f"config files no README command uses: {sorted(files - used)}"


def test_the_readme_names_only_existing_configs():
    named = set(re.findall(r'config/\w+\.py', manual())) - {PLACEHOLDER}
    assert named and {n for n in named if not (REPO / n).exists()} == set()


def test_config_is_small():
    """config/ holds only what differs: under 500 lines in all."""
    assert sum(len(f.read_text().splitlines()) for f in (REPO / 'config').glob('*.py')) <= 500
