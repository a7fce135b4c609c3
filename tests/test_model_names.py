"""Models by name: a model Ollama has pulled, a Hugging Face repo id (from the
cache; no network in tests), `mistralvllm models` listing both stores, and
`chat --model NAME` / `serve [MODEL]... --model MODEL` loading them, driven by
the real openai and ollama clients.

The stores are built in their real on-disk layouts around the bundled GGUF
and the test suite's tiny plain model."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import ollama
import openai
import pytest

from mistralvllm import ModelLoadError
from mistralvllm.models import is_model_name, resolve_model, served_model_name
from mistralvllm.stores.huggingface import RepoName, quant_tag
from mistralvllm.stores.ollama import OllamaName
from prompts import ITALY
from service import API_KEY, REPO, start_server

GGUF_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
PLAIN_REPO = "test-org/tiny-llama"
OLLAMA_NAME = "smollm2:135m"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CONFIG = REPO / "config" / "config.json"


@dataclass
class Stores:
    """An Ollama store and a Hugging Face cache, and the variables that point at them."""

    ollama: Path
    hf_cache: Path
    blob: Path  # the default GGUF in Ollama's store
    gguf_q4_1: Path  # ... and in the Hugging Face cache's snapshot

    @property
    def env(self) -> dict[str, str]:
        return {"OLLAMA_MODELS": str(self.ollama), "HF_HUB_CACHE": str(self.hf_cache), "HF_HUB_OFFLINE": "1"}


def stored_copy(source: Path, blob: Path) -> Path:
    """``source`` as a store keeps it: a file of its own named by its digest
    (no ``.gguf``), hard-linked where the file system allows."""
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        try:
            os.link(source, blob)
        except OSError:
            shutil.copyfile(source, blob)
    return blob


def ollama_manifest(store: Path, name: tuple[str, str, str, str], layers: dict[str, Path]) -> None:
    """Write an Ollama manifest for ``layers`` (media type: file), each stored as a blob by its digest."""
    entries = []
    for media_type, source in layers.items():
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        stored_copy(source, store / "blobs" / f"sha256-{digest}")
        entries.append({"mediaType": media_type, "digest": f"sha256:{digest}", "size": source.stat().st_size})
    manifest = store.joinpath("manifests", *name)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    config = {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:" + "0" * 64, "size": 2}
    media_type = "application/vnd.docker.distribution.manifest.v2+json"
    manifest.write_text(json.dumps({"schemaVersion": 2, "mediaType": media_type, "config": config, "layers": entries}))


def hf_snapshot(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """A repo in the Hugging Face cache: blobs by content hash, a snapshot of symlinks to them, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    for name, source in files.items():
        blob = stored_copy(source, repo / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest())
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(os.path.relpath(blob, (snapshot / name).parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, default_model: Path, tiny_model: Path) -> Stores:
    root = tmp_path_factory.mktemp("stores")
    template = root / "template.txt"
    template.write_text("{{ .Prompt }}")
    model = "application/vnd.ollama.image.model"
    layers = {model: default_model, "application/vnd.ollama.image.template": template}
    ollama_manifest(root / "ollama", ("registry.ollama.ai", "library", "smollm2", "135m"), layers)
    ollama_manifest(root / "ollama", ("hf.co", "HuggingFaceTB", "SmolLM2-135M-Instruct-GGUF", "Q4_1"), {model: default_model})
    snapshot = hf_snapshot(
        root / "hf", GGUF_REPO, {"SmolLM2-135M-Instruct.Q4_1.gguf": default_model, "SmolLM2-135M-Instruct.Q8_0.gguf": default_model}
    )
    hf_snapshot(root / "hf", PLAIN_REPO, {f.name: f for f in tiny_model.iterdir() if f.is_file()})
    blob = root / "ollama" / "blobs" / f"sha256-{hashlib.sha256(default_model.read_bytes()).hexdigest()}"
    return Stores(root / "ollama", root / "hf", blob, snapshot / "SmolLM2-135M-Instruct.Q4_1.gguf")


def test_names_and_paths_are_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert OllamaName.parse("qwen2.5:0.5b") == OllamaName("registry.ollama.ai", "library", "qwen2.5", "0.5b")
    assert OllamaName.parse("llama3") == OllamaName("registry.ollama.ai", "library", "llama3", "latest")
    assert OllamaName.parse("me/model:v1") == OllamaName("registry.ollama.ai", "me", "model", "v1")
    assert OllamaName.parse("hf.co/org/repo:Q4_K_M") == OllamaName("hf.co", "org", "repo", "Q4_K_M")
    assert OllamaName.parse("hf.co/org/repo:Q4_K_M").short == "hf.co/org/repo:Q4_K_M"  # type: ignore[union-attr]
    assert all(OllamaName.parse(bad) is None for bad in ("a/b/c/d", "x:", ":tag", "a//b", "a:b:c"))
    assert RepoName.parse("org/name:Q4_K_M") == RepoName("org/name", "Q4_K_M") and RepoName.parse("org/name") == RepoName("org/name", None)
    assert RepoName.parse("qwen2.5:0.5b") is None and RepoName.parse("dir/model.gguf") is None
    assert [quant_tag(f) for f in ("a-Q4_K_M.gguf", "qwen2.5-0.5b-instruct-q4_k_m.gguf", "SmolLM2.Q4_1.gguf", "m-f16.gguf", "model.gguf")] == [
        "Q4_K_M",
        "Q4_K_M",
        "Q4_1",
        "F16",
        None,
    ]
    existing = tmp_path / "org" / "name"
    existing.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not is_model_name("org/name") and is_model_name("org/other") and not is_model_name("other/x.gguf") and not is_model_name("./x")
    assert served_model_name("org/other:Q4_0") == "org/other:Q4_0" and served_model_name(tmp_path / "m.Q4_0.gguf") == "m.Q4_0"


def test_an_ollama_name_loads_its_blob(stores: Stores) -> None:
    assert resolve_model(OLLAMA_NAME, stores.env) == stores.blob
    assert resolve_model("hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1", stores.env) == stores.blob
    with pytest.raises(ModelLoadError) as error:
        resolve_model("smollm2:360m", stores.env)
    assert str(error.value) == f"smollm2:360m: no such model file or directory, nor a model Ollama has pulled (its stores: {stores.ollama})"


def test_a_hugging_face_repo_id_loads_from_the_cache(stores: Stores) -> None:
    assert resolve_model(f"{GGUF_REPO}:Q4_1", stores.env) == stores.gguf_q4_1
    assert resolve_model(f"{GGUF_REPO}:q8_0", stores.env).name == "SmolLM2-135M-Instruct.Q8_0.gguf"
    plain = resolve_model(PLAIN_REPO, stores.env)
    assert plain.is_dir() and {"config.json", "model.safetensors", "tokenizer.json"} <= {f.name for f in plain.iterdir()}
    problems = {
        GGUF_REPO: "has several GGUF files and none is Q4_K_M; name one as HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:TAG, TAG one of: Q4_1, Q8_0",
        f"{GGUF_REPO}:Q5_K_M": "has no Q5_K_M file",
        f"{PLAIN_REPO}:Q4_0": "has no GGUF files, so ':Q4_0' picks none",
        "test-org/absent": f"test-org/absent: not in the Hugging Face cache ({stores.hf_cache}) (HF_HUB_OFFLINE is set)",
    }
    for name, problem in problems.items():
        with pytest.raises(ModelLoadError) as error:
            resolve_model(name, stores.env)
        assert problem in str(error.value) and str(stores.ollama) in str(error.value), error.value


def test_models_lists_both_stores(stores: Stores) -> None:
    env = {**os.environ, **stores.env, "COLUMNS": "250"}
    listed = subprocess.run([sys.executable, "-m", "mistralvllm", "models", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert [m["name"] for m in found["ollama"]] == ["hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1", OLLAMA_NAME]
    assert all(m["path"] == str(stores.blob) and m["size_bytes"] == stores.blob.stat().st_size for m in found["ollama"])
    assert [m["name"] for m in found["huggingface"]] == [f"{GGUF_REPO}:Q4_1", f"{GGUF_REPO}:Q8_0", PLAIN_REPO]
    assert found["configured"][0]["architecture"] == "llama"
    table = subprocess.run([sys.executable, "-m", "mistralvllm", "models"], capture_output=True, text=True, env=env, timeout=120).stdout
    assert all(name in table for name in (OLLAMA_NAME, f"{GGUF_REPO}:Q8_0", PLAIN_REPO, f"Hugging Face cache ({stores.hf_cache})")), table


def test_chat_takes_a_model_by_name(stores: Stores, tmp_path: Path) -> None:
    env = {**os.environ, **stores.env, "MISTRALVLLM_HISTORY__PATH": str(tmp_path / "h.sqlite3"), "XDG_DATA_HOME": str(tmp_path / "data")}
    chat = [sys.executable, "-m", "mistralvllm", "chat", "--config", str(CONFIG), "--json", "--model"]
    answers = [
        subprocess.run([*chat, name], input=ITALY[0]["content"], capture_output=True, text=True, env=env, timeout=120)
        for name in (OLLAMA_NAME, PLAIN_REPO)
    ]
    assert all(answer.returncode == 0 for answer in answers), [answer.stderr for answer in answers]
    assert "Rome" in json.loads(answers[0].stdout)["text"]
    missing = subprocess.run([*chat, "smollm2:1.7b"], input="Hi", capture_output=True, text=True, env=env, timeout=120)
    assert missing.returncode == 1 and "smollm2:1.7b: no such model file or directory, nor a model Ollama has pulled" in missing.stderr
    assert "nor a configured model name (configured: SmolLM2-135M-Instruct.Q4_1)" in missing.stderr


def test_serve_models_given_by_name(stores: Stores, tmp_path: Path) -> None:
    """`serve NAME --model NAME`: both served under the names given, and, being
    the same GGUF, answering the same greedy text through each API's client."""
    hf_name = f"{GGUF_REPO}:Q4_1"
    server = start_server(tmp_path, extra_env=stores.env, models=(OLLAMA_NAME, "--model", hf_name))
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY)
        assert [m.id for m in client.models.list()] == [OLLAMA_NAME, hf_name]
        by_hf_name = client.chat.completions.create(model=hf_name, messages=ITALY, max_tokens=16, temperature=0)  # type: ignore[arg-type]
        by_ollama_name = ollama.Client(host=server.url, headers={"Authorization": f"Bearer {API_KEY}"}).chat(
            model=OLLAMA_NAME, messages=ITALY, options={"num_predict": 16, "temperature": 0}
        )
        assert "Rome" in by_ollama_name.message.content and by_hf_name.choices[0].message.content == by_ollama_name.message.content
    finally:
        server.stop()


def test_serve_a_file_and_refuse_a_name_twice(tiny_model: Path, tmp_path: Path, stores: Stores) -> None:
    server = start_server(tmp_path, models=(str(tiny_model),))
    try:
        assert [m.id for m in openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY).models.list()] == [tiny_model.name]
    finally:
        server.stop()
    env = {**os.environ, **stores.env}
    serve = [sys.executable, "-m", "mistralvllm", "serve"]
    twice = subprocess.run([*serve, OLLAMA_NAME, "--model", OLLAMA_NAME], capture_output=True, text=True, env=env, timeout=120)
    assert twice.returncode == 1 and "models: 'smollm2:135m' is given twice (model 1 and model 2); name each model once" in twice.stderr
    absent = subprocess.run([*serve, "test-org/absent"], capture_output=True, text=True, env=env, timeout=120)
    assert absent.returncode == 1 and "test-org/absent: not in the Hugging Face cache" in absent.stderr
