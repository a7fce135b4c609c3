"""Images in a chat: where they come from (bytes, a file, a ``data:`` URL,
an http(s) URL where the server allows it) and the content part the engine
reads, ``{"type": "image", "image": <encoded bytes>}``.

A message's content is a string, or a list of parts: ``{"type": "text",
"text": ...}``, ``{"type": "image", "image": bytes | path}`` and OpenAI's
``{"type": "image_url", "image_url": {"url": ...}}``. `resolve_images` (or
`aresolve_images`, which may fetch) turns every image part into bytes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RequestError

# The signatures of the formats the engine decodes, at the start of the file
# (WebP's at offset 8, after "RIFF" and the size).
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}

# The most bytes one encoded image may have (llama-server and Ollama take
# images of this order; a photo from a phone is 2-8 MB).
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class ImageSources:
    """Where a request's images may be read from: ``local_root`` (files under
    it; None: no file), http(s) URLs when ``fetch_http``, and at most
    ``max_bytes`` each. The library and the command read any file
    (`LOCAL`); the server reads none unless configured (`SERVED`)."""

    local_root: Path | None = None
    fetch_http: bool = False
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES


LOCAL = ImageSources(local_root=Path("/"))
SERVED = ImageSources()


def image_part(data: bytes) -> dict[str, Any]:
    """The content part that carries one encoded image to the engine."""
    return {"type": "image", "image": bytes(data)}


def image_digest(data: bytes) -> str:
    """The image's name in the history: the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def data_url(data: bytes) -> str:
    """The image as a ``data:`` URL (its media type from its signature)."""
    kind = (image_format(data) or "octet-stream").lower()
    media = "application/octet-stream" if kind == "octet-stream" else f"image/{kind}"
    return f"data:{media};base64,{base64.b64encode(data).decode('ascii')}"


def content_text(content: str | Sequence[Mapping[str, Any]] | None) -> str:
    """The text of a message's content: the string, or its text parts joined."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")


def content_images(content: str | Sequence[Mapping[str, Any]] | None) -> list[bytes]:
    """The encoded images of a resolved content, in order."""
    if content is None or isinstance(content, str):
        return []
    return [part["image"] for part in content if part.get("type") == "image" and isinstance(part.get("image"), bytes)]


def has_images(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any message holds an image part."""
    return any(
        isinstance(m, Mapping)
        and isinstance(content := m.get("content"), list)
        and any(isinstance(p, Mapping) and p.get("type") in ("image", "image_url") for p in content)
        for m in messages
    )


def decode_data_url(url: str, where: str, max_bytes: int) -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URL."""
    header, comma, payload = url.partition(",")
    if not comma or not header.startswith("data:"):
        raise RequestError(f"{where}: a data: URL needs a comma between its header and its data")
    if not header.endswith(";base64"):
        raise RequestError(f"{where}: expected a base64 data: URL (data:image/png;base64,...)")
    if len(payload) * 3 // 4 > max_bytes:
        raise RequestError(f"{where}: the image is over {max_bytes} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(f"{where}: the data: URL's data is not base64 ({e})") from None


def read_image_file(path: str | os.PathLike[str], where: str, sources: ImageSources = LOCAL) -> bytes:
    """The bytes of an image file, where ``sources`` lets files be read."""
    if sources.local_root is None:
        raise RequestError(f"{where}: local files are not read here; send the image as a data: URL (or set server.images.local_dir)")
    file = Path(path).expanduser().resolve()
    if not file.is_relative_to(sources.local_root.resolve()):
        raise RequestError(f"{where}: {file} is outside {sources.local_root}, the only directory images are read from")
    try:
        size = file.stat().st_size
        if size > sources.max_bytes:
            raise RequestError(f"{where}: {file} is {size} bytes, over the {sources.max_bytes} an image may have")
        return file.read_bytes()
    except OSError as e:
        raise RequestError(f"{where}: cannot read the image {file} ({e.strerror or e})") from None


def read_image_url(url: str, where: str, sources: ImageSources) -> bytes:
    """The bytes a ``data:`` or ``file:`` URL (or a plain path) names; http(s)
    URLs need `aresolve_images`."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "data":
        return decode_data_url(url, where, sources.max_bytes)
    if scheme == "file":
        return read_image_file(urllib.parse.unquote(urllib.parse.urlsplit(url).path), where, sources)
    if scheme in ("http", "https"):
        raise RequestError(f"{where}: http(s) images are not fetched here; download it first, or serve with server.images.fetch_http")
    if scheme and len(scheme) > 1:
        raise RequestError(f"{where}: expected a data:, file: or http(s) URL, got {scheme}:")
    return read_image_file(url, where, sources)


async def fetch_image(url: str, where: str, sources: ImageSources) -> bytes:
    """The bytes at an http(s) URL, read up to ``sources.max_bytes``."""
    import httpx

    try:
        async with httpx.AsyncClient(follow_redirects=True, timeout=30.0) as client, client.stream("GET", url) as response:
            if response.status_code != 200:
                raise RequestError(f"{where}: fetching {url} answered HTTP {response.status_code}")
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > sources.max_bytes:
                    raise RequestError(f"{where}: {url} is over the {sources.max_bytes} bytes an image may have")
            return bytes(data)
    except httpx.HTTPError as e:
        raise RequestError(f"{where}: cannot fetch {url} ({e})") from None


def read_image(path: str | os.PathLike[str], sources: ImageSources = LOCAL) -> bytes:
    """The bytes of the image file at ``path`` (any file, by default), checked
    to be an image within the size limit; a `RequestError` names the file otherwise."""
    return _checked(read_image_file(path, str(path), sources), str(path), sources)


def _part_source(part: Mapping[str, Any], where: str) -> tuple[str, bytes | bytearray | str | os.PathLike[str]]:
    """Where an image part's image is: (its field's location, bytes or a URL/path)."""
    if part.get("type") == "image_url":
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, Mapping) else image_url
        if not isinstance(url, str):
            raise RequestError(f"{where}.image_url.url: expected a string")
        return f"{where}.image_url.url", url
    image = part.get("image")
    if not isinstance(image, bytes | bytearray | str | os.PathLike):
        raise RequestError(f"{where}.image: expected the image's bytes or its file's path")
    return f"{where}.image", image


def image_format(data: bytes) -> str | None:
    """The image format ``data`` starts with (PNG, JPEG, GIF, WebP, BMP,
    TIFF), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for signature, name in _SIGNATURES.items() if data.startswith(signature)), None)


def _checked(data: bytes, where: str, sources: ImageSources) -> bytes:
    """``data`` if it is an image of a readable format within the size limit."""
    if len(data) > sources.max_bytes:
        raise RequestError(f"{where}: the image is {len(data)} bytes, over the {sources.max_bytes} an image may have")
    if image_format(data) is None:
        raise RequestError(f"{where}: not an image (expected PNG, JPEG, WebP, GIF, BMP or TIFF data)")
    return bytes(data)


def _resolved(messages: Sequence[Mapping[str, Any]], read: Any) -> list[dict[str, Any]]:
    out = []
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, str) or not content:
            out.append(dict(message))
            continue
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, Mapping) and part.get("type") in ("image", "image_url"):
                parts.append(image_part(read(part, f"messages[{i}].content[{j}]")))
            else:
                parts.append(part)
        out.append({**message, "content": parts})
    return out


def resolve_images(messages: Sequence[Mapping[str, Any]], sources: ImageSources = LOCAL) -> list[dict[str, Any]]:
    """``messages`` with every image part as the engine's part (bytes), read
    from where ``sources`` allows; a `RequestError` names the part otherwise."""

    def read(part: Mapping[str, Any], where: str) -> bytes:
        location, source = _part_source(part, where)
        if isinstance(source, bytes | bytearray):
            return _checked(bytes(source), location, sources)
        if isinstance(source, str):
            return _checked(read_image_url(source, location, sources), location, sources)
        return _checked(read_image_file(source, location, sources), location, sources)

    return _resolved(messages, read)


async def aresolve_images(messages: Sequence[Mapping[str, Any]], sources: ImageSources) -> list[dict[str, Any]]:
    """`resolve_images`, fetching http(s) URLs first where ``sources.fetch_http``."""
    fetched: dict[str, bytes] = {}
    for i, message in enumerate(messages):
        content = message.get("content")
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if not (isinstance(part, Mapping) and part.get("type") in ("image", "image_url")):
                continue
            location, source = _part_source(part, f"messages[{i}].content[{j}]")
            if isinstance(source, str) and urllib.parse.urlsplit(source).scheme.lower() in ("http", "https") and sources.fetch_http:
                fetched[source] = await fetch_image(source, location, sources)
    if not fetched:
        return resolve_images(messages, sources)

    def with_fetched(message: Mapping[str, Any]) -> dict[str, Any]:
        content = message.get("content")
        if not isinstance(content, list):
            return dict(message)
        parts = [image_part(fetched[url]) if (url := _fetched_url(part)) in fetched else part for part in content]
        return {**message, "content": parts}

    return resolve_images([with_fetched(m) for m in messages], sources)


def _fetched_url(part: Any) -> str:
    """An image_url part's URL, or "" for any other part."""
    if isinstance(part, Mapping) and part.get("type") == "image_url":
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, Mapping) else image_url
        return url if isinstance(url, str) else ""
    return ""
