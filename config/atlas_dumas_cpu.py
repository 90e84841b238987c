# Atlas (deep Omega-rule memory + sliding-window attention, MAG) on French, CPU-sized: Dumas
# online; offline, Wikipedia lead sections (no French literature exists in any registry).
# Its baseline, config/gpt_dumas_cpu.py, is this file with arch='gpt' (the same window, no memory).
# Tokenizer: data/literature_fr_balanced (equal bytes of EN/FR/ES); the English-only one with
#   --dataset=literature_fr_enbpe --out_dir=out-atlas-fr-enbpe-cpu
# python prepare/literature.py && python train.py config/atlas_dumas_cpu.py
out_dir = 'out-atlas-fr-balanced-cpu'
dataset = 'literature_fr_balanced'
arch = 'atlas'
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
window = 32                   # attention sees 32 tokens; older context only through the memory
pos = 'rope'
norm = 'rmsnorm'
bias = False
atlas_mode = 'mag'
mem_depth = 2
mem_key_dim = 8               # phi_2 of an 8-dim key: C(10, 2) = 45 features
mem_hidden = 32
mem_poly = 2
mem_window = 4
mem_chunk = 16
mem_muon = False              # NS_5 per token costs ~15x a step on CPU; on for the GPU configs
mem_lr = 0.01
batch_size = 16
learning_rate = 2e-3
max_iters = 500
min_lr = 2e-4
warmup_iters = 50
beta2 = 0.99
weight_decay = 0.1
eval_interval = 100
eval_iters = 10
log_interval = 20
device = 'cpu'
