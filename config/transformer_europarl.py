# Transformer baseline of config/backpack_europarl.py: the same config with arch='gpt'.
# python prepare/europarl.py && python train.py config/transformer_europarl.py
out_dir = 'out-europarl-transformer'
dataset = 'europarl'
arch = 'gpt'
n_senses = 16                 # ignored by arch gpt
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
warmup_iters = 500            # 1% of the steps (backpacks-flash-attn configs)
weight_decay = 0.1
grad_clip = 1.0
eval_interval = 500
eval_iters = 50
log_interval = 50
compile = True                  # torch.compile (a GPU config); --compile=False for eager
