"""Both throughput benchmarks run end to end at a micro scale on CPU, every configuration (no timing asserted)."""

import json
import sys

from benchmarks import generate_throughput, train_throughput


def test_train_throughput_runs_every_configuration(tmp_path, monkeypatch, capsys):
    out = tmp_path / "train.json"
    monkeypatch.setattr(sys, "argv", ["train_throughput.py", "--shape", "micro", "--batch", "4", "--steps", "2",
                                      "--warmup", "1", "--repeats", "1", "--lengths", "varied", "--json", str(out),
                                      "--configs", "stock-eager,ours",
                                      "--ours", json.dumps({"bucket_batches": 3, "max_tokens_per_micro_batch": 96})])
    train_throughput.main()
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"stock-eager", "ours"}
    assert all(r["tokens_per_s"] > 0 for r in results.values())
    assert "ours / stock-eager:" in capsys.readouterr().out


def test_generate_throughput_runs_every_configuration(tmp_path, monkeypatch, capsys):
    out = tmp_path / "generate.json"
    monkeypatch.setattr(sys, "argv", ["generate_throughput.py", "--shape", "micro", "--batches", "4",
                                      "--samples-per-prompt", "2", "--prompt", "12", "--new", "6", "--repeats", "1",
                                      "--configs", "stock-default,stock-static,ours", "--json", str(out)])
    generate_throughput.main()
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"stock-default@4", "stock-static@4", "ours@4"}
    assert all(r["new_tokens_per_s"] > 0 for r in results.values())
    assert "ours / stock-static:" in capsys.readouterr().out
