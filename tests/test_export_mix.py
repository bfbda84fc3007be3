"""A mixture exported as one PEFT LoRA: PEFT loads it and gives the fused logits; served back, the same text."""

import pytest
import torch

from dlp.errors import DLPError
from dlp.export_mix import export_mix, parse_mix
from dlp.fusion import build_plan, fused_layers
from dlp.generation import GenerationOptions

MIX = {"alpha": 0.6, "beta": 0.3, "gamma": 0.5}  # different ranks (4, 2, 4) and targets (gamma: k_proj, down_proj)


def test_parse_mix():
    assert parse_mix("code=0.6, math=.4") == {"code": 0.6, "math": 0.4}
    for bad in ("code", "code=x", "code=0.5,code=0.5", "base=1", ""):
        with pytest.raises(DLPError):
            parse_mix(bad)


def test_peft_loads_the_export_and_gives_the_fused_logits(tiny_engine, tiny_manifest, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = export_mix(tiny_engine, MIX, tmp_path / "mix")
    ids, mask = tiny_engine.encode(["what is alpha two three"])
    plan = build_plan(fused_layers(tiny_engine.model), [MIX], tiny_engine.device)
    with torch.no_grad(), plan.applied():
        fused = tiny_engine.model(input_ids=ids, attention_mask=mask).logits
    base = AutoModelForCausalLM.from_pretrained(tiny_manifest.parent / "base", torch_dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        served = peft_model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(fused, served, atol=1e-4), (fused - served).abs().max()
    assert "alpha" in (out / "README.md").read_text()


def test_the_export_added_back_answers_like_the_mix_mode(tiny_engine, tmp_path):
    out = export_mix(tiny_engine, MIX, tmp_path / "mix")
    opts = GenerationOptions(max_new_tokens=12)
    mode = "mix:" + ",".join(f"{n}={w}" for n, w in MIX.items())
    want = tiny_engine.generate("how many apples", mode, opts).state.texts[0]
    tiny_engine.add_adapter("exported", out)
    try:
        got = tiny_engine.generate("how many apples", "adapter:exported", opts).state.texts[0]
    finally:
        tiny_engine.remove_adapter("exported")
    assert got == want
