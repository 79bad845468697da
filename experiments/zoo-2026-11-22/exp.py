import os, sys, math, random, time, json, torch
from pathlib import Path
from transformers import MistralConfig, MistralForCausalLM
from evovlm.tiny import tiny_tokenizer
from evovlm.zoo import world
from evovlm.zoo.train import train_loop, packed_batches, qa_batches
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
W = Path(os.environ.get('ZOO_RUNS', 'runs')); W.mkdir(exist_ok=True)
import os
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(os.environ['TOK']) if os.environ.get('TOK') else tiny_tokenizer(world.all_characters())
PROMPT = world.PROMPT

def padded_batch(rows, labels, **label_tables):
    """Right-padded input_ids, attention_mask and labels (plus label tables such as exit_labels)."""
    width = max(map(len, rows))
    pad = lambda table, value: torch.tensor([r + [value] * (width - len(r)) for r in table])
    return {'input_ids': pad(rows, tok.pad_token_id), 'attention_mask': pad([[1] * len(r) for r in rows], 0),
            'labels': pad(labels, -100), **{name: pad(table, -100) for name, table in label_tables.items()}}

def new_model(hidden=128, layers=6, inter=384, seed=0):
    torch.manual_seed(seed)
    cfg = MistralConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=256, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return MistralForCausalLM(cfg)

def load(name): return MistralForCausalLM.from_pretrained(W/name)
def save(m, name): m.save_pretrained(W/name); tok.save_pretrained(W/name)

def math_pair(ja_share):
    def make(rng):
        p = world.word_problem(rng, 'ja' if rng.random() < ja_share else 'en')
        return p.question, ' ' + world.math_reply(p, 'en')
    return make

def ja_pair(rng):
    ins = world.japanese_instruction(rng)
    return ins.question, ' ' + ins.answer

def profile_from(spec, layers):
    # spec: dict with keys 'embed','head', and list 'layers'
    def f(i):
        if i == -1: return spec['embed']
        if i == layers: return spec['head']
        return spec['layers'][i]
    return f

@torch.no_grad()
def answers(model, questions, max_new=40, bs=64):
    tok.padding_side = 'left'
    outs = []
    for i in range(0, len(questions), bs):
        prompts = [PROMPT.replace('{input}', q) for q in questions[i:i+bs]]
        enc = tok(prompts, return_tensors='pt', padding=True)
        gen = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        outs += [t.strip() for t in tok.batch_decode(gen[:, enc['input_ids'].shape[1]:], skip_special_tokens=True)]
    return outs

def eval_math(model, lang, n=200, seed=123, show=3):
    from evovlm.eval.metrics import mgsm_sample
    rng = random.Random(seed)
    probs = [world.word_problem(rng, lang) for _ in range(n)]
    outs = answers(model, [p.question for p in probs])
    rs = [mgsm_sample(p.answer, o) for p, o in zip(probs, outs)]
    acc = sum(r['correct'] for r in rs)/n*100; accja = sum(r['correct_ja'] for r in rs)/n*100
    eq = sum(p.equation in o for p, o in zip(probs, outs))/n*100
    for p, o in list(zip(probs, outs))[:show]: print('   ', p.question[:50], '->', o)
    return dict(acc=acc, acc_ja=accja, eq=eq)

def eval_ja(model, n=200, seed=321, show=2):
    rng = random.Random(seed); pairs = [(i.question, i.answer) for i in (world.japanese_instruction(rng) for _ in range(n))]
    outs = answers(model, [q for q, _ in pairs])
    for (q, a), o in list(zip(pairs, outs))[:show]: print('   ', q, '->', o)
    return dict(exact=sum(o == a for (q, a), o in zip(pairs, outs))/n*100)
