from exp import *
steps = int(sys.argv[1]); name = sys.argv[2]; hidden=int(sys.argv[3]) if len(sys.argv)>3 else 128
m = new_model(hidden=hidden, inter=hidden*3)
rng = random.Random(0)
t=time.time()
losses = train_loop(m, packed_batches(tok, world.pretraining_document, rng, batch_size=32, seq_len=128), steps=steps, lr=3e-3, warmup=100, desc='pretrain')
print('pretrain', time.time()-t, 's final loss', sum(losses[-50:])/50)
save(m, name)
