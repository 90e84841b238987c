# MDLM + importance-aware masking (ATAT) on the offline Wikipedia excerpt, sized to finish in a few minutes on 2 CPU cores.
# python prepare/wikitext103.py && python train.py config/mdlm_atat_cpu.py
# torchrun --standalone --nproc_per_node=2 train.py config/mdlm_atat_cpu.py   (gloo; the same global batch)
# config/mdlm_cpu.py differs only in these flags; the training loss is a weighted objective, val_loss the plain NELBO.
out_dir = 'out-wiki-mdlm-atat-cpu'
dataset = 'wikitext103'
arch = 'mdlm'
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
cond_dim = 64
dropout = 0.0
bias = False
norm = 'layernorm'
mlp = 'gelu'
pos = 'rope'
time_cond = False
# importance-aware options (ATAT): estimator, adaptive masking, easy->hard curriculum
importance = True
adaptive_masking = True
curriculum = True
imp_n_layer = 2
imp_n_embd = 64
imp_n_head = 4
batch_size = 16                 # x 2 micro-steps x 128 = 4,096 tokens per step (docs/mdlm.md, "The unigram plateau")
gradient_accumulation_steps = 2
max_iters = 1500
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 50
weight_decay = 0.0
beta2 = 0.99
grad_clip = 1.0
ema_decay = 0.0                 # no EMA: 0.9999 averages over ~10k steps, more than this run has; docs/mdlm.md's numbers are of the raw weights
dtype = 'float32'
eval_interval = 250
eval_iters = 8
log_interval = 10
device = 'cpu'
