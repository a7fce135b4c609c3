"""Models named by their Hugging Face repo id (``org/name``, or
``org/name:Q4_K_M`` for one file of a GGUF repo), found in the Hugging Face
cache through ``huggingface_hub``, and downloaded into it when online
(``HF_HUB_OFFLINE`` unset). The cache is the one ``huggingface_hub`` uses:
``HF_HUB_CACHE``, else ``$HF_HOME/hub``."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError
from . import StoredModel

REPO_ID = re.compile(r"(?P<repo>[\w][\w.-]*/[\w][\w.-]*)(?::(?P<tag>[\w.-]+))?")
# A GGUF file's quantization as its name gives it: Q4_K_M, IQ4_XS, Q8_0, F16...
QUANT_TAG = re.compile(r"(?<![A-Za-z0-9])(I?Q\d\w*?|B?F16|F32)(?=[-.]|$)", re.IGNORECASE)
# The file llama.cpp's `-hf` and Ollama's `hf.co/` names pick without a tag.
DEFAULT_QUANT = "Q4_K_M"
# What a plain model needs of its repo (not every format the repo offers).
PLAIN_MODEL_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.txt"]
TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class RepoName:
    """``org/name`` and the quantization tag after a colon, if any."""

    repo_id: str
    tag: str | None

    @classmethod
    def parse(cls, name: str) -> RepoName | None:
        match = REPO_ID.fullmatch(name)
        return None if match is None or name.endswith(".gguf") else cls(match["repo"], match["tag"])


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The cache huggingface_hub reads and writes, by its own rule."""
    environ = os.environ if environ is None else environ
    if environ.get("HF_HUB_CACHE"):
        return Path(environ["HF_HUB_CACHE"]).expanduser()
    home = environ.get("HF_HOME") or str(Path(environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    return Path(home).expanduser() / "hub"


def is_offline(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return (environ.get("HF_HUB_OFFLINE") or environ.get("TRANSFORMERS_OFFLINE") or "").upper() in TRUE_VALUES


def quant_tag(filename: str) -> str | None:
    """The quantization a GGUF file's name says (``...-Q4_K_M.gguf``: ``Q4_K_M``)."""
    tags = QUANT_TAG.findall(Path(filename).name.removesuffix(".gguf"))
    return tags[-1].upper() if tags else None


def pick_gguf(name: RepoName, files: list[str]) -> str | None:
    """The GGUF file of a repo's ``files`` that ``name`` picks (None: not a GGUF repo)."""
    ggufs = sorted(f for f in files if f.endswith(".gguf") and "mmproj" not in Path(f).name.lower())
    if not ggufs:
        return None
    wanted = (name.tag or DEFAULT_QUANT).upper()
    chosen = [f for f in ggufs if quant_tag(f) == wanted]
    if len(chosen) == 1 or (chosen and name.tag is not None):
        return chosen[0]
    if name.tag is None and len(ggufs) == 1:
        return ggufs[0]
    tags = ", ".join(sorted({quant_tag(f) or f for f in ggufs}))
    problem = f"has no {wanted} file" if name.tag is not None else f"has several GGUF files and none is {DEFAULT_QUANT}"
    raise ModelLoadError(f"{name.repo_id} {problem}; name one as {name.repo_id}:TAG, TAG one of: {tags}")


def resolve(name: RepoName, environ: Mapping[str, str] | None = None, *, download: bool = True) -> Path:
    """The model file (GGUF) or directory (plain model) that ``name`` names,
    from the cache, downloaded into it first when online and ``download``."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError

    offline, cache = is_offline(environ) or not download, cache_dir(environ)
    where = f"the Hugging Face cache ({cache})" + (" (HF_HUB_OFFLINE is set)" if is_offline(environ) else "")
    try:
        files, unreachable = None, None
        if not offline:
            try:
                files = HfApi().list_repo_files(name.repo_id)
            except RepositoryNotFoundError:
                raise
            except Exception as e:  # the Hub unreachable, or answering an error: the cache may have it
                unreachable = _first_line(e)
        if files is None and (files := _cached_files(name.repo_id, cache)) is None:
            reason = f"; the Hugging Face Hub did not answer ({unreachable})" if unreachable else ""
            raise ModelLoadError(f"{name.repo_id}: not in {where}{reason}")
        local_only = offline or unreachable is not None
        if (gguf := pick_gguf(name, files)) is not None:
            return Path(hf_hub_download(name.repo_id, gguf, cache_dir=cache, local_files_only=local_only))
        if name.tag is not None:
            raise ModelLoadError(f"{name.repo_id}: has no GGUF files, so ':{name.tag}' picks none; name it without a tag")
        return Path(snapshot_download(name.repo_id, cache_dir=cache, local_files_only=local_only, allow_patterns=PLAIN_MODEL_FILES))
    except (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as e:
        raise ModelLoadError(f"{name.repo_id}: cannot get it from the Hugging Face Hub nor from {where} ({_first_line(e)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _cached_files(repo_id: str, cache: Path) -> list[str] | None:
    """The files of ``repo_id``'s cached main revision (``refs/main`` names
    its snapshot), or None where the cache has none."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    try:
        snapshot = repo / "snapshots" / (repo / "refs" / "main").read_text().strip()
    except OSError:
        return None
    files = [str(path.relative_to(snapshot)) for path in snapshot.rglob("*") if path.is_file()]
    return files or None


def list_models(environ: Mapping[str, str] | None = None) -> list[StoredModel]:
    """The chat models in the cache: one per GGUF file (``org/name:TAG``) and
    one per plain model repo (``org/name``)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        repos = scan_cache_dir(cache_dir(environ)).repos
    except CacheNotFound:
        return []
    found = []
    for repo in sorted(repos, key=lambda repo: repo.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda revision: revision.last_modified)
        files = {file.file_name: file for file in revision.files}
        ggufs = [file for name, file in sorted(files.items()) if name.endswith(".gguf") and "mmproj" not in name.lower()]
        for file in ggufs:
            tag = quant_tag(file.file_name)
            found.append(StoredModel(f"{repo.repo_id}:{tag}" if tag else repo.repo_id, file.file_path, file.size_on_disk))
        if not ggufs and "config.json" in files and any(name.endswith(".safetensors") for name in files):
            found.append(StoredModel(repo.repo_id, revision.snapshot_path, revision.size_on_disk))
    return found
