"""Sources, TA(1,1), and layer-wise oracles: MATH for depths <= cut, JA after (depth -1 embed, L head)."""
from exp import *
import fmt; from fmt import eval_ja_sep
from evovlm.zoo.train import layer_index
from evovlm.eval.metrics import mgsm_sample
base, ja, mth = sys.argv[1:4]; cuts = [int(x) for x in sys.argv[4].split(',')]
full = len(sys.argv) > 5
B, J, M = load(base), load(ja), load(mth); L = B.config.num_hidden_layers
sb, sj, sm = B.state_dict(), J.state_dict(), M.state_dict()
def build(fn):
    m = load(base); m.load_state_dict({k: fn(layer_index(k, L), sb[k], sj[k]-sb[k], sm[k]-sb[k]) for k in sb}); return m
def mg(model, lang, n=200, seed=123, show=2):
    rng = random.Random(seed); probs = [world.word_problem(rng, lang) for _ in range(n)]
    outs = answers(model, [p.question for p in probs])
    rs = [mgsm_sample(p.answer, o) for p, o in zip(probs, outs)]
    for p, o in list(zip(probs, outs))[:show]: print('      ->', o)
    return {k: round(sum(r[k] for r in rs)/n*100, 1) for k in ('correct', 'correct_ja', 'correct_pure')}
def report(name, m):
    r = {'ja_math': mg(m, 'ja')}
    if full: r['en_math'] = mg(m, 'en', show=0); r['ja_qa'] = eval_ja_sep(m)
    print(name, json.dumps(r), flush=True)
report('ja', J); report('math', M)
report('ta11', build(lambda li, b, dj, dm: b + dj + dm))
for c in cuts: report(f'oracle<= {c}', build(lambda li, b, dj, dm: b + (dm if li <= c else dj)))
