"""``spd-bench export``: a tiny real run (tiny-llama, arith plugin, base/raw_sd/spd, seed 1, one epoch),
then its cells exported and loaded the way others will load them: stock lm-eval with the adapter,
transformers for the merged and projected checkpoints, and huggingface_hub's upload client
against a stand-in hub server on localhost (the real hub is not reachable from the test machines)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import torch
import yaml

from conftest import spd_bench_cmd
from helpers import run_arith
from spd_bench import cli
from spd_bench.models import resolve_model_path

pytestmark = pytest.mark.slow

# A large learning rate, so that the adapter visibly changes the logits (the checks below compare them).
SETTINGS = ("method_options.spd.n_calibration=8", "train.epochs=1", "train.lr=0.05")
TOKEN = "hf_spd_bench_test_token"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny pipeline's results and cache, and the built-in base model's folder."""
    root = tmp_path_factory.mktemp("export-run")
    cache = root / "cache"
    run_arith(root, cache, "tiny-llama", ("base", "raw_sd", "spd"), SETTINGS)
    base_folder = resolve_model_path("tiny-llama", cache)[0]
    return {"root": root, "results": root / "results", "cache": cache, "base": base_folder}


def export(run: dict[str, Path], out: Path, *extra: str, method: str = "spd", cache: Path | None = None) -> int:
    """``spd-bench export`` in this process (the console script's main)."""
    return cli.main(["--quiet", "export", "--results", str(run["results"]), "--cache-dir", str(cache or run["cache"]),
                     "--model", "tiny-llama", "--method", method, "--seed", "1", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def adapter_export(run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "spd-adapter"
    assert export(run, out) == 0
    return out


def record_of(run: dict[str, Path], method: str) -> dict[str, Any]:
    return json.loads((run["results"] / f"records/tiny-llama/arith/{method}-seed1.json").read_text())


def text_files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir() if p.suffix in (".json", ".md", ".yaml", ".jinja")}


def logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.tensor([[1, 40, 52, 33, 61, 70, 45, 12, 99, 7]])


# ---- (1) the adapter names its base model portably; the card holds the records' metrics --------------
def test_adapter_config_names_the_base_model_and_no_cache_path(run, adapter_export):
    config = json.loads((adapter_export / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-llama"  # the built-in, as the run was given it
    assert config["revision"] is None  # only hub models have a commit
    cached = json.loads((run["cache"] / "train" / record_of(run, "spd")["provenance"]["stage_keys"]["train"]
                         / "adapter_config.json").read_text())
    assert cached["base_model_name_or_path"].startswith(str(run["cache"]))  # what the export had to fix
    assert {k: v for k, v in config.items() if k not in ("base_model_name_or_path", "revision")} == {
        k: v for k, v in cached.items() if k not in ("base_model_name_or_path", "revision")}
    for name, text in text_files(adapter_export).items():
        assert str(run["cache"]) not in text and str(run["root"]) not in text, name
    assert {"adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
            "spd_bench_run.yaml"} <= {p.name for p in adapter_export.iterdir()}
    assert not [p for p in adapter_export.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_card_holds_the_metrics_options_and_provenance_of_the_cell(run, adapter_export):
    from huggingface_hub import ModelCard

    card = ModelCard.load(adapter_export / "README.md")  # the hub's own parser reads its metadata
    assert card.data.library_name == "peft" and "spd" in card.data.tags
    text = (adapter_export / "README.md").read_text()
    record = record_of(run, "spd")
    for metric, value in record["metrics"].items():
        assert re.search(rf"\| arith \| in \| {re.escape(metric)} \| \**{value:.4f}\**", text), metric
    assert "built-in" in text and "not on the hub" in text  # the card says the base is not a hub id
    assert "n_examples 16" in text and "seed 1" in text and "arith_train" in text
    assert "| rank_fraction | `0.5` |" in text and "| n_calibration | `8` |" in text
    assert record["provenance"]["git_commit"] in text and f"spd-bench {record['provenance']['versions']['spd-bench']}" in text
    assert "spd-bench run --config spd_bench_run.yaml" in text
    # the config beside the card is the run's, narrowed to this cell, and a run accepts it as it is
    from spd_bench.config import load_yaml, make_config

    config = make_config(load_yaml(adapter_export / "spd_bench_run.yaml"))
    assert (config.methods, config.seeds, config.tasks) == (["spd"], [1], ["arith"])
    assert config.model == "tiny-llama" and config.train.lr == 0.05
    assert config.method_options == record["config"]["method_options"]


# ---- (2) stock lm-eval loads the exported adapter ----------------------------------------------------
def lm_eval_task(folder: Path) -> Path:
    """A two-choice lm-eval task over a JSONL file, as a YAML lm-eval reads with --include_path."""
    folder.mkdir()
    items = folder / "items.jsonl"
    items.write_text("".join(json.dumps({"question": f"Q: {a} + 9 =\nA:", "choices": [f"{a + 9}", f"{a + 8}"],
                                         "label": 0}) + "\n" for a in range(1, 7)))
    (folder / "export_smoke.yaml").write_text(yaml.safe_dump({
        "task": "export_smoke", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(items)}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}", "doc_to_target": "label",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }))
    return folder


def loglikelihood(model: Any, tokenizer: Any, context: str, continuation: str) -> float:
    """log p(continuation | context) as lm-eval's hf model computes it (whole string encoded, then split)."""
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    scores = torch.log_softmax(logits(model, torch.tensor([whole[:-1]]))[0], dim=-1)
    return sum(scores[i - 1, whole[i]].item() for i in range(len(context_ids), len(whole)))


def test_stock_lm_eval_loads_the_exported_adapter(run, adapter_export, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    task_dir = lm_eval_task(tmp_path / "tasks")
    command = [str(Path(sys.executable).parent / "lm_eval"), "--model", "hf", "--model_args",
               f"pretrained={run['base']},peft={adapter_export},tokenizer={adapter_export}", "--device", "cpu",
               "--tasks", "export_smoke", "--include_path", str(task_dir), "--limit", "4", "--log_samples",
               "--output_path", str(tmp_path / "lm_eval_out")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"\|export_smoke\|.*\|acc\s*\|", result.stdout), result.stdout
    [results_file] = (tmp_path / "lm_eval_out").rglob("results_*.json")
    assert "acc,none" in json.loads(results_file.read_text())["results"]["export_smoke"]
    [samples_file] = (tmp_path / "lm_eval_out").rglob("samples_export_smoke_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == 4
    # lm-eval's log-likelihoods are those of base + the exported adapter, not of the base model alone
    tokenizer = AutoTokenizer.from_pretrained(adapter_export)
    base = AutoModelForCausalLM.from_pretrained(run["base"]).eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run["base"]), str(adapter_export)).eval()
    for sample in samples:
        for request, response in zip(sample["arguments"].values(), sample["resps"]):
            context, continuation = request["arg_0"], request["arg_1"]
            logged = float(response[0][0])
            assert logged == pytest.approx(loglikelihood(adapted, tokenizer, context, continuation), abs=1e-4)
            assert abs(logged - loglikelihood(base, tokenizer, context, continuation)) > 1e-3


# ---- (3) --merge and (4) --projected: plain checkpoints with the right logits --------------------------
def test_merged_checkpoint_gives_the_logits_of_base_plus_adapter(run, adapter_export, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    assert export(run, out, "--merge") == 0
    assert not list(out.glob("adapter_*")) and (out / "model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run["base"]), str(adapter_export)).eval()
    base = AutoModelForCausalLM.from_pretrained(run["base"]).eval()
    assert torch.allclose(logits(merged, IDS), logits(adapted, IDS), atol=1e-4, rtol=0)
    assert (logits(merged, IDS) - logits(base, IDS)).abs().max() > 1e-3  # the adapter is in the weights
    assert "library_name: transformers" in (out / "README.md").read_text()
    for name, text in text_files(out).items():
        assert str(run["cache"]) not in text, name


def test_projected_checkpoint_is_spds_folded_generator(run, tmp_path):
    from transformers import AutoModelForCausalLM

    from spd_bench.spd.extract import load_projectors
    from spd_bench.spd.projection import folded_copy

    out = tmp_path / "projected"
    assert export(run, out, "--projected") == 0
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    prepare = record_of(run, "spd")["provenance"]["stage_keys"]["prepare"]
    projectors = load_projectors(run["cache"] / "prepare" / prepare / "projectors.safetensors")
    base = AutoModelForCausalLM.from_pretrained(run["base"]).eval()
    assert torch.allclose(logits(exported, IDS), logits(folded_copy(base, projectors), IDS), atol=1e-5, rtol=0)
    assert (logits(exported, IDS) - logits(base, IDS)).abs().max() > 1e-3
    card = (out / "README.md").read_text()
    assert "SPD's generator" in card and "layer 1 k: rank 16/32" in card


# ---- (5) refusals: one line, exit 2, nothing written ----------------------------------------------------
def damaged_cache(run: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the run's cache whose spd adapter was overwritten after the train stage wrote it."""
    copy = tmp_path / "damaged-cache"
    shutil.copytree(run["cache"], copy, ignore=shutil.ignore_patterns("*.lock"))
    train = record_of(run, "spd")["provenance"]["stage_keys"]["train"]
    (copy / "train" / train / "adapter_model.safetensors").write_bytes(b"not the adapter")
    return copy


@pytest.mark.parametrize("case, extra, method, message", [
    ("missing record", ("--seed", "2"), "spd", r"no record of spd seed 2 .*run it first: spd-bench run"),
    ("missing cache", (), "raw_sd", r"the train stage of this cell \(train/\w+\) is not in the cache .*run it first"),
    ("damaged cache", (), "spd", r"adapter_model.safetensors changed since the stage wrote it"),
    ("not SPD", ("--projected",), "raw_sd", r"--projected exports SPD's projected generator, and raw_sd has no"),
    ("base", (), "base", r"method base trains nothing"),
    ("both", ("--merge", "--projected"), "spd", r"--merge exports .* pick one"),
    ("private alone", ("--private",), "spd", r"--private is an option of --push-to-hub"),
    ("wrong source", ("--source", "gsm8k"), "spd", r"trained on source 'gsm8k' \(sources recorded: arith_train\)"),
])
def test_refusals_are_one_line_and_write_nothing(run, tmp_path, capsys, case, extra, method, message):
    cache = {"missing cache": tmp_path / "empty-cache", "damaged cache": None}.get(case, run["cache"])
    if case == "damaged cache":
        cache = damaged_cache(run, tmp_path)
    (tmp_path / "empty-cache").mkdir()
    out_parent = tmp_path / "exports"
    out_parent.mkdir()
    capsys.readouterr()
    argv = ["export", "--results", str(run["results"]), "--cache-dir", str(cache), "--model", "tiny-llama",
            "--method", method, "--seed", "1", "--out", str(out_parent / "out"), *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: "), err
    assert re.search(message, err), err
    assert list(out_parent.iterdir()) == []  # neither the folder nor a temporary one


def test_an_existing_folder_is_never_overwritten(run, adapter_export, capsys):
    before = sorted(p.name for p in adapter_export.iterdir())
    assert export(run, adapter_export) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in adapter_export.iterdir()) == before


# ---- the hub-id branch: a run on a hub model (from a hub cache made here) --------------------------------
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_a_hub_model_is_named_by_its_id_and_commit(run, tmp_path, monkeypatch):
    """A hub cache holding tiny-llama as spd-test/tiny-llama at COMMIT, the layout snapshot_download reads offline."""
    import huggingface_hub.constants

    hub_cache = tmp_path / "hub"
    snapshot = hub_cache / "models--spd-test--tiny-llama" / "snapshots" / COMMIT
    shutil.copytree(run["base"], snapshot)
    (hub_cache / "models--spd-test--tiny-llama" / "refs").mkdir()
    (hub_cache / "models--spd-test--tiny-llama" / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    run_arith(tmp_path, tmp_path / "cache", "spd-test/tiny-llama", ("raw_sd",), SETTINGS[1:])
    record = json.loads((tmp_path / "results/records/spd-test__tiny-llama/arith/raw_sd-seed1.json").read_text())
    assert record["provenance"]["model_key"] == f"spd-test/tiny-llama@{COMMIT}"
    out = tmp_path / "export"
    assert cli.main(["export", "--results", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
                     "--model", "spd-test/tiny-llama", "--method", "raw_sd", "--seed", "1", "--out", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["base_model_name_or_path"], config["revision"]) == ("spd-test/tiny-llama", COMMIT)
    card = (out / "README.md").read_text()
    assert "base_model: spd-test/tiny-llama" in card and f"revision=\"{COMMIT}\"" in card
    for name, text in text_files(out).items():
        assert str(tmp_path / "cache") not in text and str(hub_cache) not in text, name


def test_a_local_model_folder_keeps_its_path(run, tmp_path):
    folder = tmp_path / "my-model"
    shutil.copytree(run["base"], folder)
    run_arith(tmp_path, tmp_path / "cache", str(folder), ("raw_sd",), SETTINGS[1:])
    out = tmp_path / "export"
    assert cli.main(["export", "--results", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
                     "--model", str(folder), "--method", "raw_sd", "--seed", "1", "--out", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["base_model_name_or_path"], config["revision"]) == (str(folder), None)
    card = (out / "README.md").read_text()
    assert f"the local folder `{folder}`" in card and "base_model:" not in card


# ---- (6) --push-to-hub ---------------------------------------------------------------------------------
class StandInHub(ThreadingHTTPServer):
    """The four hub endpoints upload_folder and create_repo call (repo creation, validate, preupload,
    commit), answering as the hub does for small files ("regular" uploads, inline in the commit);
    committed files land in ``root/<repo>/``. Not the hub: LFS/xet transfers are never asked for."""

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), StandInHandler)
        self.root = root
        self.requests: list[tuple[str, str, dict[str, Any]]] = []  # (method, path, JSON body or {})
        self.created: dict[str, dict[str, Any]] = {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class StandInHandler(BaseHTTPRequestHandler):
    server: StandInHub

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, {}))
        self._answer(401 if self.headers.get("Authorization") != f"Bearer {TOKEN}" else 404, {"error": "not here"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlparse(self.path).path
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        self.server.requests.append(("POST", path, lines[0] if len(lines) == 1 else {"ndjson": lines}))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._answer(401, {"error": "Invalid credentials in Authorization header"})
        if path == "/api/repos/create":
            repo = f"{lines[0]['organization']}/{lines[0]['name']}"
            self.server.created[repo] = lines[0]
            return self._answer(200, {"url": f"{self.server.endpoint}/{repo}"})
        if path == "/api/validate-yaml":
            return self._answer(200, {})
        match = re.fullmatch(r"/api/models/(.+)/(preupload|commit)/main", path)
        if not match or match.group(1) not in self.server.created:
            return self._answer(404, {"error": "Repository not found"})
        if match.group(2) == "preupload":
            return self._answer(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                for f in lines[0]["files"]]})
        for item in lines:
            if item["key"] == "file":
                target = self.server.root / match.group(1) / item["value"]["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(item["value"]["content"]))
        return self._answer(200, {"commitUrl": f"{self.server.endpoint}/{match.group(1)}/commit/{'1' * 40}",
                                  "commitOid": "1" * 40, "pullRequestUrl": None})


@pytest.fixture
def hub(tmp_path):
    server = StandInHub(tmp_path / "hub-repos")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_push_refused_offline_before_anything_is_written(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert export(run, tmp_path / "out", "--push-to-hub", "me/model") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: cannot push: HF_HUB_OFFLINE is set"), err
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_push_refused_when_the_hub_cannot_be_reached(run, tmp_path, capsys, monkeypatch):
    from spd_bench.hub import hub_reachable

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    hub_reachable.cache_clear()
    try:
        assert export(run, tmp_path / "out", "--push-to-hub", "me/model") == 2
    finally:
        hub_reachable.cache_clear()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"cannot push: the hub at http://127.0.0.1:{port} cannot be reached" in err, err
    assert list(tmp_path.iterdir()) == []


def test_push_uploads_the_folder_through_huggingface_hub(run, tmp_path, hub):
    """The console script in its own process, pointed at the stand-in hub with HF_ENDPOINT and HF_TOKEN."""
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE",)}
    env.update(HF_ENDPOINT=hub.endpoint, HF_TOKEN=TOKEN, HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost", HF_HOME=str(tmp_path / "hf-home"), OMP_NUM_THREADS="1")
    out = tmp_path / "out"
    command = spd_bench_cmd("export", "--results", str(run["results"]), "--cache-dir", str(run["cache"]), "--model",
                            "tiny-llama", "--method", "spd", "--seed", "1", "--out", str(out),
                            "--push-to-hub", "spd-test/exported", "--private")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"pushed to {hub.endpoint}/spd-test/exported" in result.stdout
    assert hub.created["spd-test/exported"]["visibility"] == "private"
    pushed = hub.root / "spd-test" / "exported"
    assert sorted(p.name for p in pushed.iterdir()) == sorted(p.name for p in out.iterdir())
    for file in out.iterdir():
        assert (pushed / file.name).read_bytes() == file.read_bytes(), file.name
    calls = [path for method, path, _body in hub.requests if method == "POST" and path != "/api/validate-yaml"]
    assert calls == ["/api/repos/create", "/api/models/spd-test/exported/preupload/main",
                     "/api/models/spd-test/exported/commit/main"], hub.requests
    commits = [body for method, path, body in hub.requests if path.endswith("/commit/main")]
    assert len(commits) == 1 and commits[0]["ndjson"][0]["value"]["summary"].startswith("spd-bench export: spd seed 1")


def test_a_refused_push_is_one_line_and_keeps_the_folder(run, tmp_path, hub, capsys, monkeypatch):
    """The hub refusing the token (401): in this process, huggingface_hub's endpoint and offline switch
    patched (they are read when it is imported; the test above sets them the user's way)."""
    import huggingface_hub.constants

    from spd_bench.hub import hub_reachable

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub_reachable.cache_clear()
    try:
        assert export(run, tmp_path / "out", "--push-to-hub", "spd-test/exported") == 2
    finally:
        hub_reachable.cache_clear()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot push" in err and "401" in err and "hf upload spd-test/exported" in err, err
    assert (tmp_path / "out" / "adapter_config.json").is_file()  # the export itself is complete
    assert not hub.created
