"""A real MiniLM classifier (all-MiniLM-L6-v2, 6 layers x 12 heads x 32): a few pruning steps, compaction parity."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from tmkd.prune import Pruner, PruningConfig, compact


def test_minilm_prune_fill_compact(minilm):
    tok = AutoTokenizer.from_pretrained(minilm)
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(minilm, num_labels=2)
    cfg = PruningConfig(block_size=32, attention_density=0.3, ffn_density=0.4, total_steps=4, warmup_steps=0,
                        cooldown_steps=1, score_init="magnitude")
    pruner = Pruner(model, cfg).attach()
    opt = torch.optim.AdamW(pruner.parameter_groups(lr=1e-4, score_lr=1e-2))
    texts = ["a gripping, beautifully shot film", "dull and far too long", "not bad at all", "I left early."]
    batch = tok(texts, padding=True, return_tensors="pt")
    labels = torch.tensor([1, 0, 1, 0])
    model.train()
    for step in range(4):
        pruner.step(step)
        loss = model(**batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    pruner.step(4)
    report = pruner.density_report()
    assert all(abs(ld.attention_density - 0.3) <= 1 / 144 for ld in report.layers)  # 12x12 blocks per matrix
    assert all(abs(ld.ffn_density - 0.4) <= 1 / 1536 for ld in report.layers)
    pruner.fill()
    model.eval()
    with torch.no_grad():
        masked = model(**batch).logits
        small = compact(pruner.finalize())
        torch.testing.assert_close(small(**batch).logits, masked, atol=1e-4, rtol=1e-4)
    assert small.config.heads_per_layer == [ld.heads_kept for ld in report.layers]
    assert small.config.intermediate_sizes == [ld.ffn_units_kept for ld in report.layers]
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
