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
activation_checkpointing = True  # per-token Newton-Schulz keeps every S_t of a chunk and
# its NS intermediates for backward (estimated, not measured: ~330 GB at batch 8 x 1024 without checkpointing; ~30 GB with it)
mem_lr = 0.05                 # NS bounds each write (spectral norm <= eta): Muon tolerates 5x the CPU configs' inner lr
batch_size = 8
gradient_accumulation_steps = 1
compile = True
