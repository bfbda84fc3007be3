import time, sys
t0=time.perf_counter()
import torch
t1=time.perf_counter()
from dlp import engine as E
t2=time.perf_counter()
marks=[]
def wrap(mod, name):
    f=getattr(mod,name)
    def g(*a,**k):
        s=time.perf_counter(); r=f(*a,**k); marks.append((name, time.perf_counter()-s)); return r
    setattr(mod,name,g)
for n in ["load_base","speed_up_head","load_router","load_learned","install_gate_hooks","choose_kernels","Routing","SessionAdapters"]:
    wrap(E,n)
orig=E.Engine.add_adapter
def aa(self,*a,**k):
    s=time.perf_counter(); r=orig(self,*a,**k); marks.append(("add_adapter",time.perf_counter()-s)); return r
E.Engine.add_adapter=aa
e=E.Engine.from_manifest(None)
t3=time.perf_counter()
print(f"torch {t1-t0:.2f} dlp.engine import {t2-t1:.2f} engine {t3-t2:.2f}")
agg={}
for n,d in marks: agg[n]=agg.get(n,0)+d
for n,d in agg.items(): print(f"  {n} {d:.3f}")
