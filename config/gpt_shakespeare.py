# The GPT baseline of Atlas at the original study's size (GPU): 4 layers, d_model 256, 4 heads, batch 32, AdamW lr
# 3e-4, context 512 with a 128-token attention window; config/atlas_shakespeare.py, named after it, adds the memory,
# so older context reaches a prediction only through it. English, balanced BPE; French (Dumas online, Wikipedia
# leads offline), the English-only BPE: --dataset=literature_{en,fr}_{balanced,enbpe} --out_dir=out-<arch>-<lang>-<tok>
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
activation_checkpointing = True  # for atlas's memory; gpt too (~1/3 more compute) so the twins differ only in it
batch_size = 32
learning_rate = 3e-4
min_lr = 3e-5
warmup_iters = 200
log_interval = 20
compile = True
