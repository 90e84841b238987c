# Atlas at the GPT-2 124M shape for bench.py (target >= 0.5x the tokens/s of bench_gpt.py): 12 layers, d 768,
# 12 heads, context 1024, window 512, MLP memory on phi_2 of a 16-dim key (153 features), Omega window 4, chunk 64,
# one Newton-Schulz per chunk (per token it needs the checkpointing: ~330 GB at 8 x 1024 without, estimated).
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
mem_key_dim = 16
mem_hidden = 64
mem_chunk = 64
mem_muon_scope = 'chunk'
activation_checkpointing = True
batch_size = 8
compile = True
