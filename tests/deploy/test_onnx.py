"""ONNX export and the parity check: passes on padded batches of several lengths, fails on other weights,
works for a custom Auto-registered class without token_type_ids, and caches by source files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
)

from tmkd.models.tokenizers import synthetic_tokenizer

MISSING = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"{' and '.join(MISSING)} not installed "
                                                      "(pip install onnx onnxruntime): ONNX export is optional")

from tmkd.deploy import DEFAULT_ATOL, check_parity, default_onnx_dir, export_onnx  # noqa: E402
from tmkd.deploy.onnx import onnx_latency  # noqa: E402

# Pairs of clearly different lengths: batches of 3 mix padded and unpadded rows at several padded lengths.
TEXTS = [("alpha", "beta"), ("gamma delta alpha beta gamma delta", "alpha beta gamma"),
         ("beta beta beta", "delta"), ("alpha beta", "gamma delta alpha beta gamma delta alpha beta gamma delta"),
         ("delta", "gamma"), ("alpha gamma", "beta delta gamma")]
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def save_tiny(folder: Path, seed: int = 0, cls: type = BertForSequenceClassification,
              config_cls: type = BertConfig) -> Path:
    tok = synthetic_tokenizer()
    torch.manual_seed(seed)
    model = cls(config_cls(vocab_size=len(tok), **TINY))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = save_tiny(tmp_path_factory.mktemp("tiny"))
    return folder, export_onnx(folder, folder / "onnx")


def test_export_passes_parity_on_padded_batches_of_several_lengths(exported):
    folder, onnx_path = exported
    assert onnx_path == folder / "onnx" / "model.onnx"
    assert {"config.json", "tokenizer.json", "tmkd_onnx.json"} <= {p.name for p in onnx_path.parent.iterdir()}
    result = check_parity(folder, onnx_path, TEXTS, batch_sizes=(1, 3, 6))
    assert result["ok"], result
    assert result["max_abs_diff"] <= DEFAULT_ATOL and result["atol"] == DEFAULT_ATOL
    assert result["argmax_agreement"] == 1.0 and result["batches"] == 6 + 2 + 1
    assert len(result["seq_lens"]) >= 4  # the graph ran at many lengths, not only the traced one


def test_graph_has_dynamic_axes_and_bert_inputs(exported):
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported[1]), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(isinstance(dim, str) for shape in inputs.values() for dim in shape)  # symbolic batch and sequence
    assert [o.name for o in session.get_outputs()] == ["logits"]


def test_parity_fails_against_a_different_model(exported, tmp_path):
    other = save_tiny(tmp_path / "other", seed=1)
    result = check_parity(other, exported[1], TEXTS)
    assert not result["ok"] and result["max_abs_diff"] > DEFAULT_ATOL


def test_export_is_cached_until_the_model_changes(tmp_path):
    folder = save_tiny(tmp_path / "m")
    path = export_onnx(folder)
    assert path.parent == default_onnx_dir(folder) == folder / "onnx"
    stamp = path.stat().st_mtime_ns
    assert export_onnx(folder) == path and path.stat().st_mtime_ns == stamp  # reused
    save_tiny(folder, seed=2)  # new weights in the same folder
    path = export_onnx(folder)
    assert path.stat().st_mtime_ns != stamp and check_parity(folder, path, TEXTS[:3])["ok"]


class NoTypesConfig(BertConfig):
    model_type = "tmkd_test_no_types_bert"


class NoTypesForSequenceClassification(BertForSequenceClassification):
    """Not a stock transformers class, and, like MPNet, no token_type_ids input."""

    config_class = NoTypesConfig

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)


def test_custom_auto_registered_class_without_token_type_ids(tmp_path):
    AutoConfig.register(NoTypesConfig.model_type, NoTypesConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(NoTypesConfig, NoTypesForSequenceClassification, exist_ok=True)
    folder = save_tiny(tmp_path / "custom", cls=NoTypesForSequenceClassification, config_cls=NoTypesConfig)
    path = export_onnx(folder)
    result = check_parity(folder, path, TEXTS, batch_sizes=(2, 4))
    assert result["ok"], result
    import onnxruntime as ort

    assert [i.name for i in ort.InferenceSession(str(path)).get_inputs()] == ["input_ids", "attention_mask"]


def test_onnx_latency_has_the_torch_harness_shape(exported):
    before = torch.get_num_threads()
    result = onnx_latency(exported[1].parent, None, TEXTS, batch_sizes=(1, 4), max_length=32, threads=1,
                          max_batches=3, budget_s=0.01)
    assert torch.get_num_threads() == before
    assert result["env"]["backend"] == "onnxruntime" and result["env"]["threads"] == 1
    assert result["env"]["onnxruntime"] and set(result["batches"]) == {"1", "4"}
    for key, stats in result["batches"].items():
        assert stats["batch_size"] == int(key) and 1 <= stats["timed_batches"] <= 3
        assert 0 < stats["ms_per_batch"] <= stats["p90_ms_per_batch"]


def test_cli_with_onnx_adds_onnxruntime_rows(exported, capsys):
    from tmkd.bench.latency import main

    code = main([str(exported[0]), "--task", "synth_pair", "--rows", "8", "--batch-sizes", "2", "--onnx",
                 "--max-batches", "2", "--budget-s", "0.01", "--warmup", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert " onnxruntime " in out and "(onnx)" in out and ": ok" in out


def test_pruned_bert_with_empty_layers_exports(tmp_path):
    """tmkd's own ``tmkd_pruned_bert`` (per-layer heads and FFN widths, here down to zero) exports and matches."""
    prune = pytest.importorskip("tmkd.prune")
    tok = synthetic_tokenizer()
    torch.manual_seed(0)
    config = prune.TmkdPrunedBertConfig(vocab_size=len(tok), **{**TINY, "num_hidden_layers": 3},
                                        heads_per_layer=[2, 1, 0], intermediate_sizes=[64, 10, 0])
    prune.TmkdPrunedBertForSequenceClassification(config).save_pretrained(tmp_path / "pruned")
    tok.save_pretrained(tmp_path / "pruned")
    result = check_parity(tmp_path / "pruned", export_onnx(tmp_path / "pruned"), TEXTS, batch_sizes=(1, 3))
    assert result["ok"], result


def test_real_minilm_export_matches_torch(minilm, tmp_path):
    """Real weights and tokenizer (3 of MiniLM-L6's layers, to stay fast); the head is new, which parity ignores."""
    model = AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=2, num_hidden_layers=3)
    from transformers import AutoTokenizer

    model.save_pretrained(tmp_path / "minilm")
    AutoTokenizer.from_pretrained(minilm).save_pretrained(tmp_path / "minilm")
    path = export_onnx(tmp_path / "minilm")
    texts = [("The cat sat on the mat.", "A cat is sitting."), ("No.", "Yes, absolutely, without any doubt."),
             ("Dogs bark at night when the moon is full and the wind is cold.", "Dogs are loud.")]
    result = check_parity(tmp_path / "minilm", path, texts, batch_sizes=(1, 3))
    assert result["ok"], result
