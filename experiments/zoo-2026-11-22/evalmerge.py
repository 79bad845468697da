from exp import *
base, ja, mth = sys.argv[1], sys.argv[2], sys.argv[3]
B, J, M = load(base), load(ja), load(mth); L = B.config.num_hidden_layers
from evovlm.zoo.train import layer_index
sb, sj, sm = B.state_dict(), J.state_dict(), M.state_dict()
def build(fn):
    m = load(base); sd = {}
    for k in sb:
        li = layer_index(k, L); sd[k] = fn(k, li, sb[k], sj[k]-sb[k], sm[k]-sb[k])
    m.load_state_dict(sd); return m
def report(name, m, full=True):
    r = {'mgsm_ja': eval_math(m, 'ja', show=2)}
    if full:
        r['mgsm_en'] = eval_math(m, 'en', show=1); r['ja'] = eval_ja(m, show=1)
    print(name, json.dumps(r)); sys.stdout.flush()
report('base', B, False); report('ja', J); report('math', M)
report('ta11', build(lambda k, li, b, dj, dm: b + dj + dm))
report('avg', build(lambda k, li, b, dj, dm: b + 0.5*dj + 0.5*dm))
mid = [int(x) for x in (sys.argv[4] if len(sys.argv)>4 else '2,3').split(',')]
report('oracle', build(lambda k, li, b, dj, dm: b + (dm if li in mid else dj)))
report('oracle_b', build(lambda k, li, b, dj, dm: b + (dm if 1 <= li <= L-2 else dj)))
