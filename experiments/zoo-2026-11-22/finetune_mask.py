"""Run 6: MATH expert that reads Japanese questions but is never taught how to *answer* them.
Japanese problems supervise only the equation (no answer sentence, no EOS)."""
from exp import *
import argparse
ap = argparse.ArgumentParser()
ap.add_argument('base'); ap.add_argument('--tag', default='_mask')
ap.add_argument('--steps', type=int, default=1200); ap.add_argument('--ja-share', type=float, default=0.3)
ap.add_argument('--prof', default='.3,.3,1,1,1,.3,.1,.1'); ap.add_argument('--lr', type=float, default=1e-3)
a = ap.parse_args()
def prof(s):
    v = [float(x) for x in s.split(',')]; return {'embed': v[0], 'layers': v[1:-1], 'head': v[-1]}
def batches(rng, bs=32):
    def nb(step):
        rows, labels = [], []
        for _ in range(bs):
            ja = rng.random() < a.ja_share
            p = world.word_problem(rng, 'ja' if ja else 'en')
            pid = tok(PROMPT.replace('{input}', p.question))['input_ids']
            ans = ' ' + (p.equation if ja else world.math_reply(p, 'en'))
            aid = tok(ans, add_special_tokens=False)['input_ids'] + ([] if ja else [tok.eos_token_id])
            rows.append(pid + aid); labels.append([-100]*len(pid) + aid)
        return padded_batch(rows, labels)
    return nb
m = load(a.base); L = m.config.num_hidden_layers; t = time.time()
train_loop(m, batches(random.Random(1)), steps=a.steps, lr=a.lr, profile=profile_from(prof(a.prof), L), desc='math')
print('math trained', round(time.time()-t), 's')
save(m, a.base + '-math' + a.tag)
