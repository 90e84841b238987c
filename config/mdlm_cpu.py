# Plain MDLM on the offline Wikipedia excerpt, sized to finish in a few minutes on 2 CPU cores (torchrun
# --standalone --nproc_per_node=2: gloo, the same global batch). The base of config/mdlm_atat_cpu.py.
out_dir = 'out-wiki-mdlm-cpu'
dataset = 'wikitext103'
arch = 'mdlm'
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
cond_dim = 64
bias = False
pos = 'rope'
imp_n_embd = 64                 # the importance estimator, when config/mdlm_atat_cpu.py turns it on
batch_size = 16                 # x 2 micro-steps x 128 = 4,096 tokens per step (docs/mdlm.md, "The unigram plateau")
gradient_accumulation_steps = 2
max_iters = 1500
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 50
weight_decay = 0.0
beta2 = 0.99
ema_decay = 0.0                 # no EMA: 0.9999 averages over ~10k steps, more than this run has
dtype = 'float32'
eval_iters = 8
device = 'cpu'
