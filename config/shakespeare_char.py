"""nanoGPT's baby GPT on tiny Shakespeare, char-level: a GPU config (about 3 minutes on one A100-class GPU).

    python -m prepare.shakespeare && python train.py config/shakespeare_char.py
"""
out_dir = 'out-shakespeare-char'
data_dir = 'data/shakespeare_char'
eval_interval = 250  # frequent: this model overfits fast
eval_iters = 200
log_interval = 10
always_save_checkpoint = False  # keep the best val loss, not the last

n_layer = 6
n_head = 6
n_embd = 384
block_size = 256  # characters of context
dropout = 0.2  # a small corpus: regularise

batch_size = 64
learning_rate = 1e-3  # small models can take a higher rate
max_iters = 5000
min_lr = 1e-4
beta2 = 0.99  # few tokens per iteration: a longer memory for the second moment
warmup_iters = 100
compile = True
