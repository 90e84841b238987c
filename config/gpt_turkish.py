# Standard attention on Turkish, the baseline of config/agglutinative_turkish.py (which changes only the attention):
# 6 layers, 8 heads, d 512, context 512, AdamW lr 1e-4, weight decay 0.01 (the original setting). Compare bits per
# character. python prepare/turkish.py && python train.py config/gpt_turkish.py
out_dir = 'out-turkish-baseline'
dataset = 'turkish_unigram'
arch = 'gpt'
doc_mask = True
block_size = 512
n_layer = 6
n_head = 8
n_embd = 512
dropout = 0.1
batch_size = 32
learning_rate = 1e-4
weight_decay = 0.01
beta2 = 0.99
max_iters = 20000
lr_decay_iters = 20000
min_lr = 1e-5
warmup_iters = 200
eval_interval = 500
eval_iters = 50
log_interval = 50
compile = True
