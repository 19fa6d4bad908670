"""Self-contained GPU step benchmark: exactly the script that gave the README's GPU figures.

    python benchmarks/gpu_step_standalone.py      # needs only torch + torchvision; writes ./bench.json

Kept compact (it had to travel as a <= 2,000-character command to a lent GPU machine that had the
main checkout, not this branch). It mirrors benchmarks.gpu_step's settings: DenseNet121 (14 outputs,
uint8 input normalised inside the model), Adam; "slow" = per-step host sync (isfinite + item) and
pinned host batches; "fast" = uint8 images held in GPU memory (device-side gather), loss summed on
the device and read once per epoch, fused Adam. 10 warm-up steps, then 25 timed steps; projected
minutes for 223,414 images (min), first epoch = min + the warm-up's one-off seconds.
`python -m benchmarks.data_path --gpu --gpu-only` measures the same settings through chexutils.training.train.
"""
# fmt: off
import torch,time,json,os,torchvision as tv,torch.nn.functional as F
C=torch.cuda;P=time.perf_counter;d='cuda';torch.backends.cudnn.benchmark=True;N=223414;R=[];t0=time.time()
mu=torch.tensor([.485,.456,.406],device=d).view(1,3,1,1);sd=torch.tensor([.229,.224,.225],device=d).view(1,3,1,1)
class M(torch.nn.Module):
 def __init__(s):super().__init__();s.n=tv.models.densenet121(num_classes=14)
 def forward(s,x):return s.n(((x.float()/255).expand(-1,3,-1,-1)-mu)/sd)
def run(S,B,amp,fast,comp,W=10,T=25):
 m=M().to(d)
 if amp:m=m.to(memory_format=torch.channels_last)
 o=torch.optim.Adam(m.parameters(),1e-4,**({'fused':True} if fast else {'foreach':True}));f=torch.compile(m) if comp else m
 n=B*T;h=torch.randint(0,256,(n,1,S,S),dtype=torch.uint8);y=torch.randint(0,2,(n,14),device=d).float();g=h.to(d) if fast else None
 def ep(k):
  t=torch.zeros((),device=d,dtype=torch.float64);p=torch.randperm(n);C.synchronize();a=P()
  for i in range(k):
   r=p[i*B:(i+1)*B]
   if fast:r=r.to(d,non_blocking=True);x=g.index_select(0,r)
   else:x=h[r].pin_memory().to(d,non_blocking=True);r=r.to(d)
   with torch.autocast('cuda',torch.bfloat16,enabled=amp>0):z=f(x)
   l=F.binary_cross_entropy_with_logits(z.float(),y[r]);o.zero_grad(set_to_none=True);l.backward();o.step();t+=l.detach()*B
   if not fast:assert l.isfinite();l.item()
  assert t.isfinite();return P()-a
 w=ep(W);s=ep(T);v=T*B/s;u=max(0,w-W*B/v)
 return dict(S=S,B=B,bf16=amp,fast=fast,comp=comp,img_s=round(v),min=round(N/v/60,2),first_min=round((N/v+u)/60,2),one_off=round(u),gib=round(C.max_memory_allocated()/2**30,1))
for S in(224,320):
 for B,a,fa,c in[(32,0,0,0),(32,1,0,0),(32,1,1,0),(64,1,1,0),(128,1,1,0),(256,1,1,0),(128,1,1,1)]:
  if c and time.time()-t0>170:continue
  C.reset_peak_memory_stats()
  try:r=run(S,B,a,fa,c)
  except Exception as e:r=dict(S=S,B=B,c=c,err=repr(e)[:200])
  R.append(r);print(r,flush=True);json.dump(R,open(os.environ.get('OUT','.')+'/bench.json','w'));C.empty_cache()
