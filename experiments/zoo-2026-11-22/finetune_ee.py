"""Run 9: two-phase MATH expert with an early exit in phase 1: the equation must be readable
through the frozen final norm+head from the residual after block split-1 (logit lens), as well
as from the full model. The computation is then finished before the output blocks."""
from exp import *
from fmt import batches
import argparse, torch.nn.functional as F
ap = argparse.ArgumentParser()
ap.add_argument('base'); ap.add_argument('--tag', default='_ee')
ap.add_argument('--steps1', type=int, default=1200); ap.add_argument('--steps2', type=int, default=600)
ap.add_argument('--ja-share', type=float, default=0.3); ap.add_argument('--split', type=int, default=4)
ap.add_argument('--lr', type=float, default=1e-3); ap.add_argument('--lr2', type=float, default=1e-3)
ap.add_argument('--emb', type=float, default=.3); ap.add_argument('--exit-weight', type=float, default=1.0)
a = ap.parse_args()
m = load(a.base); L = m.config.num_hidden_layers; t = time.time()
class EarlyExit(torch.nn.Module):
    def __init__(self, m): super().__init__(); self.m = m; self.config = m.config
    def forward(self, input_ids, attention_mask, labels):
        out = self.m(input_ids=input_ids, attention_mask=attention_mask, labels=labels, output_hidden_states=True)
        h = self.m.model.norm(out.hidden_states[a.split]); logits = self.m.lm_head(h)
        ee = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
        out.loss = out.loss + a.exit_weight * ee; return out
p1 = lambda i: a.emb if i == -1 else (1.0 if 0 <= i < a.split else 0.0)
train_loop(EarlyExit(m), batches(random.Random(1), a.ja_share, False), steps=a.steps1, lr=a.lr, profile=p1, desc='math-1')
save(m, a.base + '-math' + a.tag + '_p1')
p2 = lambda i: 1.0 if i >= a.split else 0.0
train_loop(m, batches(random.Random(3), 0.0, True), steps=a.steps2, lr=a.lr2, profile=p2, desc='math-2')
print('math trained', round(time.time()-t), 's'); save(m, a.base + '-math' + a.tag)
