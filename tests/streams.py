"""Streaming chats running in threads, one conversation each, with what each
client received: for the tests that kill a server mid-answer."""

from __future__ import annotations

import json
import threading
import time

import httpx

from prompts import ITALY
from service import AUTH, MODEL

CHAT = "/v1/chat/completions"


def finished_turn(url: str, conversation_id: str) -> None:
    """A short answer stored whole under ``conversation_id`` (before a kill)."""
    reply = httpx.post(
        url + CHAT,
        json={"model": MODEL, "messages": ITALY, "max_tokens": 12},
        headers={**AUTH, "X-Conversation-Id": conversation_id},
        timeout=60,
    )
    assert reply.status_code == 200


class LiveStreams:
    """Long answers streamed from ``servers`` (conversation id -> service URL)."""

    def __init__(self, servers: dict[str, str], max_tokens: int = 400) -> None:
        self.servers = servers
        self.max_tokens = max_tokens
        self.received = dict.fromkeys(servers, "")
        self.finished: set[str] = set()  # answers that ended (with a finish reason)
        self.answering_since: dict[str, float] = {}
        self.latest_text_at: dict[str, float] = {}
        self.threads = [threading.Thread(target=self._stream, args=(cid,)) for cid in servers]
        for thread in self.threads:
            thread.start()

    def _stream(self, conversation_id: str) -> None:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"Tell a long story about lighthouse {conversation_id}."}],
            "max_tokens": self.max_tokens,
            "stream": True,
        }
        headers = {**AUTH, "X-Conversation-Id": conversation_id}
        try:
            with httpx.stream("POST", self.servers[conversation_id] + CHAT, json=body, headers=headers, timeout=300) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        choice = json.loads(line[6:])["choices"][0]
                        self.received[conversation_id] += choice["delta"].get("content", "")
                        if choice["finish_reason"]:
                            self.finished.add(conversation_id)
                        if self.received[conversation_id]:
                            self.answering_since.setdefault(conversation_id, time.monotonic())
                            self.latest_text_at[conversation_id] = time.monotonic()
        except httpx.HTTPError:
            pass  # the server died under us, as intended

    def wait_for_a_saved_partial(self, among: set[str]) -> None:
        """Until an unfinished answer of ``among`` got text more than a second
        after its first: its server saved it (every second) once it had sent
        that text. (Time alone is not enough: with several chats batched, an
        answer may get no chunk for seconds while the others read their prompts.)"""
        deadline = time.monotonic() + 120
        while not any(
            c in among and c not in self.finished and self.latest_text_at.get(c, t) - t > 1.2 for c, t in list(self.answering_since.items())
        ):
            assert time.monotonic() < deadline, "no answer ran long enough"
            time.sleep(0.05)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=300)
