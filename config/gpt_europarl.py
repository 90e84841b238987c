# The transformer baseline on EN-FR at Backpack-Micro's shape (Hewitt et al. 2023: 6 layers, 6 heads, 384 wide,
# context 512); config/backpack_europarl.py, named after it, changes only the arch.
out_dir = 'out-europarl-transformer'
dataset = 'europarl'
arch = 'gpt'
block_size = 512
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.1
batch_size = 32
learning_rate = 3e-4
max_iters = 50000
lr_decay_iters = 50000
min_lr = 3e-5
warmup_iters = 500              # 1% of the steps (backpacks-flash-attn configs)
eval_interval = 500
eval_iters = 50
log_interval = 50
compile = True
