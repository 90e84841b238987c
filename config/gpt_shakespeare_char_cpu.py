# Character-level GPT on the Shakespeare plays, sized to finish in ~5 minutes on 2 CPU cores
# (val loss ~1.7 nats/char; the target is <= 1.9 within 10 minutes).
# python prepare/shakespeare.py && python train.py config/gpt_shakespeare_char_cpu.py
out_dir = 'out-shakespeare-char'
dataset = 'shakespeare_char'
arch = 'gpt'
n_layer = 4
n_head = 6
n_embd = 192
block_size = 128
batch_size = 16
max_iters = 2000
learning_rate = 1e-3
min_lr = 1e-4
beta2 = 0.99
device = 'cpu'
