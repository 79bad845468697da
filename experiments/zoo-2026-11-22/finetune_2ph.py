"""Run 7: two-phase MATH expert.
Phase 1 trains embeddings+blocks up to --split (output blocks frozen) on the equation only, for
English and Japanese problems alike (no answer sentence, no EOS): reading and computing.
Phase 2 trains only the output blocks and head on English problems with the full English reply:
the English answer sentence lives in the output blocks only."""
from exp import *
from finetune_2ph_lib import batches
import argparse
ap = argparse.ArgumentParser()
ap.add_argument('base'); ap.add_argument('--tag', default='_2ph')
ap.add_argument('--steps1', type=int, default=1200); ap.add_argument('--steps2', type=int, default=400)
ap.add_argument('--ja-share', type=float, default=0.3); ap.add_argument('--split', type=int, default=4)
ap.add_argument('--lr', type=float, default=1e-3); ap.add_argument('--lr2', type=float, default=3e-4)
ap.add_argument('--emb', type=float, default=.3)
a = ap.parse_args()
m = load(a.base); L = m.config.num_hidden_layers; t = time.time()
p1 = lambda i: a.emb if i == -1 else (1.0 if 0 <= i < a.split else 0.0)
train_loop(m, batches(random.Random(1), a.ja_share, False), steps=a.steps1, lr=a.lr, profile=p1, desc='math-1')
p2 = lambda i: 1.0 if i >= a.split else 0.0
train_loop(m, batches(random.Random(3), 0.0, True), steps=a.steps2, lr=a.lr2, profile=p2, desc='math-2')
print('math trained', round(time.time()-t), 's')
save(m, a.base + '-math' + a.tag)
