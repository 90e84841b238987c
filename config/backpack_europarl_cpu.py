# Backpack on EN-FR sized for a few minutes on 2 CPU cores (one thread): 2 layers x 128 wide, 16 senses,
# context 128. transformer_europarl_cpu.py is the same config with arch='gpt' (checked in tests/test_backpack.py).
# python prepare/europarl.py && python train.py config/backpack_europarl_cpu.py
out_dir = 'out-europarl-backpack-cpu'
dataset = 'europarl'
arch = 'backpack'
n_senses = 16                 # ignored by arch gpt
block_size = 128
n_layer = 2
n_head = 4
n_embd = 128
dropout = 0.0
batch_size = 16
learning_rate = 2e-3
max_iters = 800
min_lr = 2e-4
warmup_iters = 50
beta2 = 0.99
weight_decay = 0.1
eval_interval = 200
eval_iters = 10
log_interval = 20
device = 'cpu'
