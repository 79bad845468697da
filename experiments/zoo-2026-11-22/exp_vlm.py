from exp import *
from evovlm.zoo import scenes
from evovlm.eval.prompts import build_prompt
from transformers import (CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, CLIPImageProcessorPil)

def make_processor():
    size = scenes.IMAGE_SIZE
    ip = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                          image_token="<image>", num_additional_image_tokens=1)

def make_vlm(base_name):
    lm = load(base_name)
    vc = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          image_size=scenes.IMAGE_SIZE, patch_size=8, projection_dim=64)
    cfg = LlavaConfig(text_config=lm.config, vision_config=vc, image_token_index=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(0)
    vlm = LlavaForConditionalGeneration(cfg)
    vlm.model.language_model.load_state_dict(lm.model.state_dict())
    vlm.lm_head.load_state_dict(lm.lm_head.state_dict())
    return vlm

def vqa_batch(proc, rng, n, ja_share):
    prompts, answers, images = [], [], []
    for _ in range(n):
        sc = scenes.random_scene(rng); lang = 'ja' if rng.random() < ja_share else 'en'
        q = scenes.visual_question(rng, sc, lang)
        prompts.append(build_prompt('zoo-qa', q.question, image_token='<image>'))
        answers.append(' ' + scenes.vqa_reply(q, 'en')); images.append(scenes.render(sc))
    texts = [p + a + tok.eos_token for p, a in zip(prompts, answers)]
    tok.padding_side = 'right'
    enc = proc(text=texts, images=images, padding=True, return_tensors='pt')
    labels = enc['input_ids'].clone()
    plen = [len(proc(text=[p], images=[im], return_tensors='pt')['input_ids'][0]) for p, im in zip(prompts, images)]
    for i, l in enumerate(plen): labels[i, :l] = -100
    labels[enc['attention_mask'] == 0] = -100
    # append eos: simplest is to rely on answer then pad; add eos token label
    return dict(enc, labels=labels)

@torch.no_grad()
def vqa_eval(vlm, proc, lang, n=200, seed=77, show=3, batch=50):
    from evovlm.eval.metrics import content_correct
    from evovlm.eval.langid import prob_japanese
    rng = random.Random(seed); rows = []
    for _ in range(n):
        sc = scenes.random_scene(rng); rows.append((sc, scenes.visual_question(rng, sc, lang)))
    outs = []
    tok.padding_side = 'left'; proc.tokenizer.padding_side = 'left'
    for i in range(0, n, batch):
        chunk = rows[i:i+batch]
        enc = proc(text=[build_prompt('zoo-qa', q.question, image_token='<image>') for _, q in chunk],
                   images=[scenes.render(sc) for sc, _ in chunk], padding=True, return_tensors='pt')
        gen = vlm.generate(**enc, max_new_tokens=28, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        outs += [t.strip() for t in tok.batch_decode(gen[:, enc['input_ids'].shape[1]:], skip_special_tokens=True)]
    content = [content_correct(o, [q.value_en, q.value_ja], list(q.wrong_en) + list(q.wrong_ja)) for (_, q), o in zip(rows, outs)]
    isja = [prob_japanese(o) >= 0.5 for o in outs]
    for (_, q), o in list(zip(rows, outs))[:show]: print('   ', q.question, '->', o)
    return dict(content=sum(content)/n*100, content_ja=sum(c and j for c, j in zip(content, isja))/n*100, ja=sum(isja)/n*100)

if __name__ == '__main__' and sys.argv[1] == 'train':
    base, steps, ja_share = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    prof = [float(x) for x in sys.argv[5].split(',')] if len(sys.argv) > 5 else [.1,.1,.3,1,1,.3,.1,.1]
    proc = make_processor(); vlm = make_vlm(base)
    L = vlm.config.text_config.num_hidden_layers
    from evovlm.zoo.train import layer_index
    # language tower by the profile; vision tower and projector at full rate
    def profile(i): return 1.0
    groups = {}
    for name, p in vlm.named_parameters():
        if 'language_model' in name or name.startswith('lm_head'):
            li = layer_index(name, L); s = prof[0] if li == -1 else prof[-1] if li == L else prof[1+li]
        else: s = 1.0
        groups.setdefault(s, []).append(p)
    opt = torch.optim.AdamW([{'params': ps, 'lr': 1e-3*s, 'base_lr': 1e-3*s} for s, ps in groups.items()], weight_decay=0.01)
    rng = random.Random(5); vlm.train(); t = time.time(); losses = []
    for step in range(steps):
        f = min(1, (step+1)/50) * (0.1 + 0.9*0.5*(1+math.cos(math.pi*step/steps)))
        for g in opt.param_groups: g['lr'] = g['base_lr']*f
        loss = vlm(**vqa_batch(proc, rng, 32, ja_share)).loss; loss.backward()
        torch.nn.utils.clip_grad_norm_(vlm.parameters(), 1.0); opt.step(); opt.zero_grad(); losses.append(loss.item())
        if step % 50 == 0: print(step, round(sum(losses[-50:])/len(losses[-50:]), 4), round(time.time()-t), flush=True)
    vlm.eval(); vlm.save_pretrained(W/(base+'-vlm')); proc.save_pretrained(W/(base+'-vlm'))
    print('en', vqa_eval(vlm, proc, 'en')); print('ja', vqa_eval(vlm, proc, 'ja'))
