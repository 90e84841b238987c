# A 124M-class encoder for bench.py: the Aeneas design (RMSNorm, RoPE, GeGLU, no biases) at
# 12 layers, d 768, 12 heads of 64, GeGLU width 2048, context 1024, vocabulary padded to 50304.
dataset = 'shakespeare_char'
arch = 'encoder'
vocab_size = 50304
n_layer = 12
n_head = 12
n_embd = 768
d_kv = 64
d_ff = 2048
norm = 'rmsnorm'
mlp = 'geglu'
pos = 'rope'
bias = False
block_size = 1024
mlm_logit_budget = 0.25         # head at 2048 of the 8192 positions: train.py's mask_rate 0.15 gives 1229 +- 32 targets
batch_size = 8
compile = True
