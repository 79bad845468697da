"""Evaluate a zoo VLM, and JA's blocks >= cut (+ final norm, head) swapped into its language tower;
also task arithmetic (VLM tower + JA delta) for comparison."""
from exp_vlm import *
from transformers import LlavaForConditionalGeneration, AutoProcessor
from evovlm.zoo.train import layer_index
vlm_name, base_name, ja_name, cut = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
proc = AutoProcessor.from_pretrained(W/vlm_name)
V = LlavaForConditionalGeneration.from_pretrained(W/vlm_name); B = load(base_name); J = load(ja_name)
L = B.config.num_hidden_layers; sb, sj = B.state_dict(), J.state_dict()
def lm_key(k):  # VLM name -> causal-LM name
    if k.startswith('model.language_model.'): return 'model.' + k[len('model.language_model.'):]
    if k.startswith('lm_head.'): return k
def merged(fn):
    m = LlavaForConditionalGeneration.from_pretrained(W/vlm_name); sd = m.state_dict()
    for k in sd:
        lk = lm_key(k)
        if lk: sd[k] = fn(layer_index(lk, L), sd[k], sb[lk], sj[lk])
    m.load_state_dict(sd); return m
def show(name, m):
    print(name, 'ja', vqa_eval(m, proc, 'ja', show=3), flush=True)
    print(name, 'en', vqa_eval(m, proc, 'en', show=1), flush=True)
show('vlm', V)
show('swap', merged(lambda li, v, b, j: j if li >= cut else v))
show('ta', merged(lambda li, v, b, j: v + (j - b)))
