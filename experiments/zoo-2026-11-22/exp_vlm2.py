"""Run 12: two-phase zoo VLM with a work part ("circle=red The answer is red.").
Phase 1: vision tower, projector, LM embeddings (.3) and blocks < split; full-model loss on the
reply plus an early-exit loss on the work tokens. Phase 2: LM blocks >= split + head only."""
from exp_vlm import *
import torch.nn.functional as F
base, steps1, steps2, split = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tag = sys.argv[5] if len(sys.argv) > 5 else '-vlm2'
from evovlm.zoo import world as Wd
def key_of(q):
    for en, pl, ja in Wd.SHAPES:
        if en in q or pl in q or ja in q: return en if en in q or pl in q else ja
def batch(proc, rng, n):
    prompts, works, rests, images = [], [], [], []
    for _ in range(n):
        sc = scenes.random_scene(rng); q = scenes.visual_question(rng, sc, 'en')
        prompts.append(build_prompt('zoo-qa', q.question, image_token='<image>'))
        k = key_of(q.question); k = k if q.kind == 'colour' else next(s[0] for s in Wd.SHAPES if s[1] == k or s[0] == k)
        works.append(f' {k}={q.value_en} '); rests.append(f'The answer is {q.value_en}.'); images.append(scenes.render(sc))
    proc.tokenizer.padding_side = 'right'
    enc = proc(text=[p + w + r + tok.eos_token for p, w, r in zip(prompts, works, rests)], images=images, padding=True, return_tensors='pt')
    labels = enc['input_ids'].clone(); exits = torch.full_like(labels, -100)
    for i, (p, w, im) in enumerate(zip(prompts, works, images)):
        pl = len(proc(text=[p], images=[im])['input_ids'][0]); wl = len(tok(w, add_special_tokens=False)['input_ids'])
        labels[i, :pl] = -100; exits[i, pl:pl + wl] = enc['input_ids'][i, pl:pl + wl]
    labels[enc['attention_mask'] == 0] = -100
    return dict(enc, labels=labels, exit_labels=exits)
proc = make_processor(); vlm = make_vlm(base); L = vlm.config.text_config.num_hidden_layers
from evovlm.zoo.train import layer_index
def run(steps, scale_of, use_exit, seed):
    groups = {}
    for name, p in vlm.named_parameters():
        s = scale_of(layer_index(name.replace('model.language_model.', 'model.'), L) if ('language_model' in name or name.startswith('lm_head')) else None)
        p.requires_grad_(s > 0)
        if s > 0: groups.setdefault(s, []).append(p)
    opt = torch.optim.AdamW([{'params': ps, 'lr': 1e-3*s, 'base_lr': 1e-3*s} for s, ps in groups.items()], weight_decay=0.01)
    rng = random.Random(seed); vlm.train(); t = time.time(); losses = []
    for step in range(steps):
        f = min(1, (step+1)/50) * (0.1 + 0.9*0.5*(1+math.cos(math.pi*step/steps)))
        for g in opt.param_groups: g['lr'] = g['base_lr']*f
        b = batch(proc, rng, 32); ex = b.pop('exit_labels')
        out = vlm(**b, output_hidden_states=True); loss = out.loss
        if use_exit:
            lg = vlm.lm_head(vlm.model.language_model.norm(out.hidden_states[split]))
            loss = loss + 0.5 * F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), ex[:, 1:].reshape(-1), ignore_index=-100)
        loss.backward(); torch.nn.utils.clip_grad_norm_([p for g in groups.values() for p in g], 1.0); opt.step(); opt.zero_grad(); losses.append(loss.item())
        if step % 50 == 0: print(step, round(sum(losses[-50:])/len(losses[-50:]), 4), round(time.time()-t), flush=True)
    for p in vlm.parameters(): p.requires_grad_(True)
run(steps1, lambda li: 1.0 if li is None else (.3 if li == -1 else (1.0 if 0 <= li < split else 0.0)), True, 5)
run(steps2, lambda li: 0.0 if li is None else (1.0 if li >= split else 0.0), False, 6)
vlm.eval(); vlm.save_pretrained(W/(base+tag)); proc.save_pretrained(W/(base+tag))
print('en', vqa_eval(vlm, proc, 'en')); print('ja', vqa_eval(vlm, proc, 'ja'))
