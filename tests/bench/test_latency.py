"""The latency harness: sane numbers per batch size, threads restored, bounded work, the CLI and its errors.

No timing thresholds: speed targets belong in benchmark output, not in tests on a shared machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from tmkd.bench.latency import main, markdown_table
from tmkd.deploy.latency import (
    encode,
    load_texts,
    make_batches,
    measure_latency,
    model_input_names,
    model_latency,
    torch_latency,
)
from tmkd.models.tokenizers import synthetic_tokenizer

TEXTS = [("alpha beta gamma delta", "beta"), ("gamma", "delta alpha beta gamma beta alpha"), ("beta beta", "alpha"),
         ("delta gamma alpha", "gamma gamma gamma")]
STAT_KEYS = {"batch_size", "ms_per_batch", "p90_ms_per_batch", "ms_per_example", "examples_per_s", "timed_batches",
             "warmup_batches", "mean_seq_len", "budget_hit"}


def tiny_classifier(seed: int = 0, layers: int = 2) -> tuple[BertForSequenceClassification, object]:
    tok = synthetic_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
                        vocab_size=len(tok), max_position_embeddings=64)
    return BertForSequenceClassification(config).eval(), tok


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    dirs = []
    for seed, layers in ((0, 2), (1, 1)):
        model, tok = tiny_classifier(seed, layers)
        folder = tmp_path_factory.mktemp(f"tiny{seed}")
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        dirs.append(folder)
    return dirs


def test_torch_latency_reports_each_batch_size_and_restores_threads():
    model, tok = tiny_classifier()
    before = torch.get_num_threads()
    result = torch_latency(model, tok, TEXTS, batch_sizes=(1, 4), max_length=16, threads=2, warmup=1,
                           max_batches=4, budget_s=1e6)  # never cut short: this checks structure, not speed
    assert torch.get_num_threads() == before
    env = result["env"]
    assert env["threads"] == 2 and env["torch"] == torch.__version__ and env["cpu"] and env["rows"] == len(TEXTS)
    assert set(result["batches"]) == {"1", "4"}
    for key, stats in result["batches"].items():
        assert set(stats) == STAT_KEYS
        assert stats["batch_size"] == int(key) and stats["timed_batches"] == 4 and not stats["budget_hit"]
        assert 0 < stats["ms_per_batch"] <= stats["p90_ms_per_batch"]
        assert stats["examples_per_s"] * stats["ms_per_example"] == pytest.approx(1000)
        assert 1 < stats["mean_seq_len"] <= 16
    assert not model.training


def test_threads_are_restored_when_the_model_fails():
    class Broken(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            raise RuntimeError("boom")

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        torch_latency(Broken(), synthetic_tokenizer(), TEXTS, batch_sizes=(2,), threads=before + 1)
    assert torch.get_num_threads() == before


def test_measure_latency_is_bounded_and_times_a_prefix_of_the_same_batches():
    batches = [{"input_ids": np.zeros((2, n))} for n in (3, 5, 7)]
    seen: list[int] = []
    stats = measure_latency(lambda b: seen.append(b["input_ids"].shape[1]), batches, warmup=2, max_batches=7,
                            budget_s=1e9)
    assert seen[:2] == [3, 5] and seen[2:] == [3, 5, 7, 3, 5, 7, 3]  # warm-up; timing restarts at batch 0, cycles
    assert stats["timed_batches"] == 7 and stats["batch_size"] == 2 and not stats["budget_hit"]
    assert stats["mean_seq_len"] == pytest.approx((3 + 5 + 7 + 3 + 5 + 7 + 3) / 7)
    seen.clear()
    stats = measure_latency(lambda b: seen.append(1), batches, warmup=2, max_batches=50, min_batches=3, budget_s=0)
    assert stats["warmup_batches"] == 1 and stats["timed_batches"] == 3 and stats["budget_hit"] and len(seen) == 4


def test_batches_are_full_deterministic_and_keep_only_model_inputs():
    batches = make_batches(TEXTS, 3, 2)
    assert batches == [TEXTS[:3], [TEXTS[3], TEXTS[0], TEXTS[1]]]
    tok = synthetic_tokenizer()
    enc = encode(tok, batches[0], 8, ["input_ids", "attention_mask"], "np")
    assert set(enc) == {"input_ids", "attention_mask"} and enc["input_ids"].dtype == np.int64
    assert enc["input_ids"].shape[1] <= 8 and (enc["attention_mask"] == 0).any()  # padded to the longest row
    assert model_input_names(tiny_classifier()[0]) == ["input_ids", "attention_mask", "token_type_ids"]


def test_load_texts_takes_a_name_or_a_config_node():
    texts = load_texts("synth_pair", rows=5)
    assert len(texts) == 5 and all(len(t) == 2 and all(isinstance(s, str) for s in t) for t in texts)
    assert load_texts({"name": "synth_pair", "max_length": None}, rows=5) == texts  # first rows: deterministic


def test_model_latency_and_table(tiny_dirs):
    texts = load_texts("synth_pair", rows=8)
    results = [{"name": str(d), **model_latency(d, texts, batch_sizes=(1, 4), max_batches=2, budget_s=0.01)}
               for d in tiny_dirs]
    info = results[0]["model"]
    assert info["params"] > 0 and info["size_bytes"] > 0 and info["layers"] == 2
    table = markdown_table([{**r, **r["model"], "name": r["name"]} for r in results])
    assert table.count("\n") == 2 + 4 - 1 and "| 1.00x |" in table


def test_cli_times_two_model_folders(tiny_dirs, capsys):
    code = main([*map(str, tiny_dirs), "--task", "synth_pair", "--rows", "16", "--batch-sizes", "1", "4",
                 "--max-batches", "3", "--budget-s", "0.01", "--warmup", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line for line in out.splitlines() if line.startswith("| /")]
    assert len(rows) == 4 and all(" torch " in r for r in rows)
    assert rows[0].endswith("| 1.00x |") and rows[1].endswith("| 1.00x |")
    assert "1 thread(s)" in out and "16 dev texts" in out


@pytest.mark.parametrize("case", ["not_a_model", "missing", "unknown_task", "bad_batch"])
def test_cli_errors_are_one_line_with_exit_2(tiny_dirs, tmp_path, capsys, case):
    (tmp_path / "notes.txt").write_text("not a model")
    args = {"not_a_model": [str(tmp_path), "--task", "synth_pair"],
            "missing": [str(tmp_path / "nope"), "--task", "synth_pair"],
            "unknown_task": [str(tiny_dirs[0]), "--task", "no_such_task"],
            "bad_batch": [str(tiny_dirs[0]), "--task", "synth_pair", "--batch-sizes", "0"]}[case]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tmkd.bench.latency: error:")
    expected = {"not_a_model": "config.json", "missing": "no such folder", "unknown_task": "no_such_task",
                "bad_batch": ">= 1"}[case]
    assert expected in err[0]
