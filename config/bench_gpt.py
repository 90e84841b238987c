# GPT-2 124M shape for bench.py: 12 layers, d 768, 12 heads, context 1024, vocabulary padded to 50304.
# Data: any prepared corpus (ids only need to be < vocab_size); python prepare/shakespeare.py
dataset = 'shakespeare_char'
arch = 'gpt'
vocab_size = 50304
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
bias = False
batch_size = 8
compile = True
