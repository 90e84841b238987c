# MDLM small (DiT, 12 layers, d 768, 12 heads, context 1024) for bench.py; vocabulary padded to 50304.
dataset = 'shakespeare_char'
arch = 'mdlm'
vocab_size = 50304
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
pos = 'rope'
bias = False
batch_size = 8
compile = True
ema_decay = 0.9999              # as the production run: the EMA update is part of the timed step
