# Atlas at the GPT-2 124M shape for bench.py (target >= 0.5x the tokens/s of bench_gpt.py):
# 12 layers, d 768, 12 heads, context 1024, sliding window 512, MLP memory on phi_2 of a 16-dim key
# (153 features), Omega window 4, chunk 64, Newton-Schulz on the momentum.
# Data: any prepared corpus (ids only need to be < vocab_size); python prepare/shakespeare.py
dataset = 'shakespeare_char'
arch = 'atlas'
vocab_size = 50304
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
window = 512
pos = 'rope'
bias = False
dropout = 0.0
atlas_mode = 'mag'
mem_depth = 2
mem_key_dim = 16
mem_hidden = 64
mem_poly = 2
mem_window = 4
mem_chunk = 64
mem_muon = True
mem_muon_scope = 'chunk'        # one Newton-Schulz per chunk, not per token (docs/atlas.md: ~9x fewer FLOPs)
activation_checkpointing = True  # needed by per-token Newton-Schulz (every S_t of a chunk kept: ~330 GB at 8 x 1024
# without it, estimated); per chunk it may no longer be needed -- not yet measured on a GPU
mem_lr = 0.05                 # NS bounds each write (spectral norm <= eta): Muon tolerates 5x the CPU configs' inner lr
batch_size = 8
gradient_accumulation_steps = 1
compile = True
