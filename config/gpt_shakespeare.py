# GPT baseline of config/atlas_shakespeare.py: the same config with arch='gpt' (same 128-token window, no
# memory; the mem_* keys are ignored by gpt).
# Tokenizer: the balanced BPE; the English-only one with --dataset=literature_en_enbpe --out_dir=out-gpt-en-enbpe
# python prepare/literature.py && python train.py config/gpt_shakespeare.py
out_dir = 'out-gpt-en-balanced'
dataset = 'literature_en_balanced'
arch = 'gpt'
n_layer = 4
n_head = 4
n_embd = 256
block_size = 512
window = 128
pos = 'rope'
norm = 'rmsnorm'
bias = False
atlas_mode = 'mag'
mem_depth = 2
mem_key_dim = 16              # phi_2 of a 16-dim key: C(18, 2) = 153 features
mem_hidden = 64
mem_poly = 2
mem_window = 4
mem_chunk = 32
mem_muon = True
mem_muon_scope = 'chunk'        # one Newton-Schulz per chunk, not per token (docs/atlas.md: ~9x fewer FLOPs)
activation_checkpointing = True  # as its atlas twin (costs gpt ~1/3 more compute, keeps the configs identical)
mem_lr = 0.05                 # NS bounds each write (spectral norm <= eta): Muon tolerates 5x the CPU configs' inner lr
batch_size = 32
learning_rate = 3e-4
max_iters = 5000
min_lr = 3e-5
warmup_iters = 200
weight_decay = 0.1
eval_interval = 250
eval_iters = 20
log_interval = 20
compile = True                  # torch.compile (a GPU config); --compile=False for eager
