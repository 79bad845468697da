from exp import *
import argparse
ap = argparse.ArgumentParser()
ap.add_argument('base'); ap.add_argument('--tag', default='')
ap.add_argument('--math-steps', type=int, default=800); ap.add_argument('--ja-steps', type=int, default=500)
ap.add_argument('--ja-share', type=float, default=0.15)
ap.add_argument('--ja-prof', default='1,1,1,.1,.1,1,1,1')   # embed, layers..., head
ap.add_argument('--math-prof', default='.1,.1,.3,1,1,.3,.1,.1')
ap.add_argument('--lr', type=float, default=1e-3)
ap.add_argument('--skip', default='')
a = ap.parse_args()
def prof(s):
    v = [float(x) for x in s.split(',')]
    return {'embed': v[0], 'layers': v[1:-1], 'head': v[-1]}
for name, steps, maker, p in [('math', a.math_steps, math_pair(a.ja_share), a.math_prof), ('ja', a.ja_steps, ja_pair, a.ja_prof)]:
    if name in a.skip: continue
    m = load(a.base); L = m.config.num_hidden_layers
    t = time.time()
    train_loop(m, qa_batches(tok, maker, random.Random(1 if name=='math' else 2), batch_size=32, template=PROMPT), steps=steps, lr=a.lr, profile=profile_from(prof(p), L), desc=name)
    print(name, 'trained', round(time.time()-t), 's')
    save(m, a.base + '-' + name + a.tag)
