"""Run 11: two-phase MATH expert. Phase 1 (embeddings .3, blocks < split): full-model loss on the
whole English reply (English problems) or the work only (Japanese problems: equation + separator),
plus an early-exit loss (logit lens after block split-1) on the work tokens only.
Phase 2: output blocks + head on English replies."""
from exp import *
import fmt, argparse, torch.nn.functional as F
ap = argparse.ArgumentParser()
ap.add_argument('base'); ap.add_argument('--tag', default='_ee2')
ap.add_argument('--steps1', type=int, default=1200); ap.add_argument('--steps2', type=int, default=600)
ap.add_argument('--ja-share', type=float, default=0.3); ap.add_argument('--split', type=int, default=4)
ap.add_argument('--lr', type=float, default=1e-3); ap.add_argument('--lr2', type=float, default=1e-3)
ap.add_argument('--emb', type=float, default=.3); ap.add_argument('--exit-weight', type=float, default=0.5)
a = ap.parse_args()
def batches(rng, ja_share, bs=32):
    def nb(step):
        rows, labels, exits = [], [], []
        for _ in range(bs):
            ja = rng.random() < ja_share
            p = world.word_problem(rng, 'ja' if ja else 'en')
            pid = tok(PROMPT.replace('{input}', p.question))['input_ids']
            work = tok(' ' + p.equation + ' ', add_special_tokens=False)['input_ids']
            rest = [] if ja else tok(fmt.math_reply(p, 'en')[len(p.equation) + 1:], add_special_tokens=False)['input_ids'] + [tok.eos_token_id]
            rows.append(pid + work + rest); labels.append([-100]*len(pid) + work + rest)
            exits.append([-100]*len(pid) + work + [-100]*len(rest))
        return padded_batch(rows, labels, exit_labels=exits)
    return nb
m = load(a.base); L = m.config.num_hidden_layers; t = time.time()
class EarlyExit(torch.nn.Module):
    def __init__(self, m): super().__init__(); self.m = m; self.config = m.config
    def forward(self, input_ids, attention_mask, labels, exit_labels):
        out = self.m(input_ids=input_ids, attention_mask=attention_mask, labels=labels, output_hidden_states=True)
        logits = self.m.lm_head(self.m.model.norm(out.hidden_states[a.split]))
        ee = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), exit_labels[:, 1:].reshape(-1), ignore_index=-100)
        out.loss = out.loss + a.exit_weight * ee; return out
p1 = lambda i: a.emb if i == -1 else (1.0 if 0 <= i < a.split else 0.0)
train_loop(EarlyExit(m), batches(random.Random(1), a.ja_share), steps=a.steps1, lr=a.lr, profile=p1, desc='math-1')
save(m, a.base + '-math' + a.tag + '_p1')
p2 = lambda i: 1.0 if i >= a.split else 0.0
train_loop(m, fmt.batches(random.Random(3), 0.0, True), steps=a.steps2, lr=a.lr2, profile=p2, desc='math-2')
print('math trained', round(time.time()-t), 's'); save(m, a.base + '-math' + a.tag)
