"""Two `mistralvllm serve` replicas sharing one PostgreSQL history: clients of
both writing at once (conversations continued across the replicas, one
conversation written through both at the same time), one replica killed
mid-answer while the other keeps serving, and the database out of reach for
a while."""

from __future__ import annotations

import json
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import psycopg

from mistralvllm.config import HistorySection
from mistralvllm.history import open_history
from postgres_server import PASSWORD, PostgresServer
from prompts import ITALY
from service import API_KEY, AUTH, MODEL, Server, start_server, stored_turns
from streams import CHAT, LiveStreams, finished_turn

CLIENTS_PER_SERVER = 3
CONVERSATIONS_PER_CLIENT = 2
TURNS_PER_CONVERSATION = 3
EVERYONE = "everyone"  # the conversation every client writes one turn to, at once


def start_replicas(tmp_path: Path, url: str) -> list[Server]:
    first = start_server(tmp_path, history=url)
    try:
        return [first, start_server(tmp_path, history=url)]
    except BaseException:
        first.stop()
        raise


def test_two_replicas_under_load_lose_and_mix_up_nothing(tmp_path: Path, postgres: PostgresServer) -> None:
    url = postgres.new_database()
    servers = start_replicas(tmp_path, url)
    clients = [openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300) for server in servers]
    try:

        def ask(server: int, conversation_id: str, question: str, rng: random.Random) -> str:
            client, headers = clients[server], {"X-Conversation-Id": conversation_id}
            messages = [{"role": "user", "content": question}]
            max_tokens = rng.randint(4, 24)
            if rng.random() < 0.5:
                stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, stream=True, extra_headers=headers)
                return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
            return (
                client.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, extra_headers=headers)
                .choices[0]
                .message.content
                or ""
            )

        def chat(client_index: int) -> list[tuple[str, str, str]]:
            """(conversation, question, answer) for every turn, in the order asked:
            conversations interleaved, each turn on the replica the last one was not."""
            rng = random.Random(client_index)
            done = [(EVERYONE, question := f"Say hello to guest{client_index}.", ask(client_index % 2, EVERYONE, question, rng))]
            for turn in range(TURNS_PER_CONVERSATION):
                for conversation in range(CONVERSATIONS_PER_CLIENT):
                    conversation_id = f"c{client_index}-{conversation}"
                    question = f"Name a colour. (marker{client_index}x{conversation}x{turn})"
                    done.append((conversation_id, question, ask((client_index + turn) % 2, conversation_id, question, rng)))
            return done

        started = time.monotonic()
        with ThreadPoolExecutor(2 * CLIENTS_PER_SERVER) as pool:
            asked = [turn for turns in pool.map(chat, range(2 * CLIENTS_PER_SERVER)) for turn in turns]
        elapsed = time.monotonic() - started
        assert all(httpx.get(server.url + "/health").status_code == 200 for server in servers)
    finally:
        for server in servers:
            server.stop()

    turns = stored_turns(url)
    written = sum(len(messages) // 2 for messages in turns.values())
    print(json.dumps({"replicas": 2, "clients": 2 * CLIENTS_PER_SERVER, "turns": len(asked), "turns_stored": written, "seconds": round(elapsed, 1)}))
    assert written == len(asked) == 2 * CLIENTS_PER_SERVER * (1 + CONVERSATIONS_PER_CLIENT * TURNS_PER_CONVERSATION)
    for conversation_id, messages in turns.items():
        # Every turn whole, its question right before its answer, nothing interrupted.
        assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2)
        assert all(m["interrupted"] == 0 for m in messages)
        stored = [(str(q["content"]), str(a["content"])) for q, a in zip(messages[::2], messages[1::2], strict=True)]
        expected = [(question, answer) for cid, question, answer in asked if cid == conversation_id]
        if conversation_id == EVERYONE:  # written through both replicas at once: in the order they began
            assert sorted(stored) == sorted(expected)
        else:  # one client's turns, alternating between the replicas
            assert stored == expected
    history = open_history(HistorySection(url=url))
    try:
        for conversation_id, question, _ in asked:
            if conversation_id != EVERYONE:
                marker = question.split("(")[1].rstrip(")")
                assert [(hit.conversation_id, hit.role) for hit in history.search(marker) if hit.role == "user"] == [(conversation_id, "user")]
        assert history.show(EVERYONE).message_count == 2 * 2 * CLIENTS_PER_SERVER
    finally:
        history.close()


def test_kill_9_of_one_replica_mid_answer_loses_no_turn_and_the_other_serves_on(tmp_path: Path, postgres: PostgresServer) -> None:
    url = postgres.new_database()
    doomed, survivor = servers = start_replicas(tmp_path, url)
    try:
        for i, server in enumerate(servers):
            finished_turn(server.url, f"done-{i}")
        streams = LiveStreams({**{f"doomed-{i}": doomed.url for i in range(3)}, **{f"survivor-{i}": survivor.url for i in range(3)}}, max_tokens=300)
        streams.wait_for_a_saved_partial({f"doomed-{i}" for i in range(3)})
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(timeout=30)
        killed_at = time.monotonic()
        streams.join()
        received, finished = streams.received, streams.finished

        turns = stored_turns(url)
        for i in range(2):
            question, answer = turns[f"done-{i}"]
            assert (question["role"], answer["role"], answer["interrupted"]) == ("user", "assistant", 0)
            assert answer["finish_reason"] in ("stop", "length") and "Rome" in str(answer["content"])
        cut_off = [c for c in received if c.startswith("doomed") and c not in finished]
        assert cut_off, "the kill came after every answer of the killed replica had ended"
        for conversation_id, text in received.items():
            question, answer = turns[conversation_id]  # every accepted question is stored
            assert conversation_id in str(question["content"])
            if conversation_id in cut_off:
                assert answer["interrupted"] == 1 and answer["finish_reason"] is None
                assert text.startswith(str(answer["content"]))  # what was saved is what was sent
            else:
                assert answer["interrupted"] == 0 and answer["content"] == text
        # The survivor's answers were running when the other replica died, and ended whole.
        assert {f"survivor-{i}" for i in range(3)} <= finished
        assert max(streams.latest_text_at[f"survivor-{i}"] for i in range(3)) > killed_at
        saved = [c for c in cut_off if turns[c][1]["content"]]
        assert saved, "the running answer's text was saved"

        # The survivor continues the conversation the killed replica left interrupted.
        reply = httpx.post(
            survivor.url + CHAT,
            json={"model": MODEL, "messages": ITALY, "max_tokens": 12},
            headers={**AUTH, "X-Conversation-Id": saved[0]},
            timeout=60,
        )
        assert reply.status_code == 200
        stored = httpx.get(survivor.url + f"/v1/conversations/{saved[0]}", headers=AUTH).json()
        assert [m["interrupted"] for m in stored["messages"]] == [False, True, False, False]
    finally:
        for server in servers:
            server.stop()


def test_a_database_out_of_reach_is_a_503_in_each_apis_shape_and_the_service_recovers(tmp_path: Path, postgres: PostgresServer) -> None:
    url = postgres.new_database()
    name = url.rsplit("/", 1)[1]
    server = start_server(tmp_path, history=url)
    ask = {"model": MODEL, "input": "What is the capital of Italy? Answer in one word.", "max_output_tokens": 8}
    try:
        stored = httpx.post(server.url + "/v1/responses", json=ask, headers=AUTH, timeout=60).json()["id"]
        conversation = {**AUTH, "X-Conversation-Id": "kept"}
        with psycopg.connect(postgres.url(), autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            try:
                openai_shaped = [
                    httpx.post(server.url + CHAT, json={"model": MODEL, "messages": ITALY, "max_tokens": 4}, headers=conversation, timeout=60),
                    httpx.get(server.url + "/v1/conversations", headers=AUTH),
                    httpx.get(server.url + f"/v1/responses/{stored}", headers=AUTH),
                    httpx.post(server.url + "/v1/responses", json={**ask, "previous_response_id": stored}, headers=AUTH, timeout=60),
                    httpx.post(server.url + "/v1/responses", json=ask, headers=AUTH, timeout=60),
                ]
                for reply in openai_shaped:
                    assert reply.status_code == 503, reply.text
                    error = reply.json()["error"]
                    assert error["code"] == "history_unavailable" and f"127.0.0.1:{postgres.port}" in error["message"]
                    assert PASSWORD not in reply.text
                anthropic_shaped = httpx.post(
                    server.url + "/v1/messages",
                    json={"model": MODEL, "max_tokens": 4, "messages": ITALY},
                    headers=conversation,
                    timeout=60,
                )
                assert anthropic_shaped.status_code == 503
                body = anthropic_shaped.json()
                assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
                assert f"127.0.0.1:{postgres.port}" in body["error"]["message"] and PASSWORD not in anthropic_shaped.text
                ollama_shaped = httpx.post(
                    server.url + "/api/chat",
                    json={"model": MODEL, "messages": ITALY, "stream": False, "options": {"num_predict": 4}},
                    headers=conversation,
                    timeout=60,
                )
                assert ollama_shaped.status_code == 503
                assert f"127.0.0.1:{postgres.port}" in ollama_shaped.json()["error"] and PASSWORD not in ollama_shaped.text
                # What needs no history is still answered.
                unstored = httpx.post(server.url + CHAT, json={"model": MODEL, "messages": ITALY, "max_tokens": 12}, headers=AUTH, timeout=60)
                assert unstored.status_code == 200 and "Rome" in unstored.json()["choices"][0]["message"]["content"]
            finally:
                admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        # Back in reach: what was stored before is there, and new turns are stored.
        again = httpx.get(server.url + f"/v1/responses/{stored}", headers=AUTH)
        assert again.status_code == 200 and "Rome" in again.text
        reply = httpx.post(server.url + CHAT, json={"model": MODEL, "messages": ITALY, "max_tokens": 4}, headers=conversation, timeout=60)
        assert reply.status_code == 200 and reply.headers["X-Conversation-Id"] == "kept"
    finally:
        server.stop()
    # Nothing was half-stored while the database was out of reach.
    turns = stored_turns(url)
    assert set(turns) == {stored, "kept"}
    assert [(m["role"], m["interrupted"]) for m in turns["kept"]] == [("user", 0), ("assistant", 0)]
