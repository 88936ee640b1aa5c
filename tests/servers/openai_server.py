"""A local OpenAI-compatible chat-completions server, scriptable per test.

A real HTTP server on 127.0.0.1 (random free port, background thread), so the tests exercise
the real ``openai`` SDK, its HTTP stack and our retry and pacing code. ``POST
/v1/chat/completions`` answers with ``chat.completion`` JSON and usage; by default it picks the
right candidate by reading the items and candidates out of the prompt.

Behaviours, queued per request with :meth:`FakeOpenAI.script` (``ok`` once the queue is empty):
``ok``, ``rate_limit`` (429 + Retry-After), ``quota`` (429 ``insufficient_quota``), ``error``
(500), ``slow`` (answers after ``slow_s``: a client timeout), ``malformed`` (content is not
JSON), ``outside`` (choice not among the candidates), ``refusal`` (``message.refusal``),
``length`` (cut off, ``finish_reason`` "length"). ``requests_per_minute`` adds a token-bucket
limit answering 429 with Retry-After when exceeded, and ``latency_s`` delays every answer.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from matching_pipeline.core.models import Candidate, Decision
from tests.servers import QuietHandler, ScriptedServer

BEHAVIOURS = ("ok", "rate_limit", "quota", "error", "slow", "malformed", "outside", "refusal", "length")

Oracle = Callable[[dict[str, Any], list[dict[str, Any]]], str]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def best_overlap(item: dict[str, Any], candidates: list[dict[str, Any]]) -> str:
    """Default oracle: the candidate whose text names the item's part number, else the best word
    overlap (Jaccard >= 0.5) of descriptions, else ``none``."""
    part = "".join(re.findall(r"[a-z0-9]+", (item.get("part_number") or "").lower()))
    for candidate in candidates:
        runs = re.findall(r"[a-z0-9]+", candidate.get("description", "").lower())
        spelled = {"".join(runs[i:j]) for i in range(len(runs)) for j in range(i + 1, min(len(runs), i + 4) + 1)}
        if part and part in spelled:
            return candidate["id"]
    words = _words(item.get("description", ""))
    scored = [
        (len(words & _words(c.get("description", ""))) / max(1, len(words | _words(c.get("description", "")))), c["id"])
        for c in candidates
    ]
    score, best = max(scored, default=(0.0, "none"))
    return best if score >= 0.5 else "none"


def synthetic_workload(
    n: int, *, k: int = 5, per_chunk: int = 10
) -> tuple[pd.DataFrame, dict[str, Decision], dict[str, str]]:
    """``n`` items the enhanced stage left unmatched, with ``k`` candidates each, that
    :func:`best_overlap` answers exactly: the pending frame, the earlier decisions (candidates) and
    the true catalog id per item. The right candidate sits at a rank that varies with the item."""
    rows, earlier, truth = [], {}, {}
    for i in range(n):
        item_id = f"it-{i}"
        models = [i + j - i % k for j in range(k)]  # item i's own model lands at rank i % k
        rows.append(
            {
                "item_id": item_id,
                "description": f"Acme Widget Model {i} blue",
                "part_number": None,
                "manufacturer": "Acme",
                "gtin": None,
                "chunk_key": f"b000001:synthetic:{i // per_chunk + 1:05d}",
            }
        )
        earlier[item_id] = Decision(
            item_id,
            None,
            "none",
            0.3,
            candidates=[Candidate(f"CAT-{m}", 0.5, f"Acme Widget Model {m} blue", f"W{m}", "Acme") for m in models],
        )
        truth[item_id] = f"CAT-{i}"
    return pd.DataFrame(rows), earlier, truth


def read_candidates(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """An item entry's candidates as ``[{"id": "c1", "description": full text}, ...]``: the
    words the request gave once (``prefix`` / ``suffix``) put back around each candidate's own,
    as a model reads them (see ``core/llm.py``)."""
    ends = (entry.get("prefix", ""), entry.get("suffix", ""))
    return [
        {"id": ref, "description": " ".join(filter(None, (ends[0], text, ends[1])))}
        for ref, text in entry["candidates"].items()
    ]


def answer_enums(body: dict[str, Any]) -> dict[str, list[str]]:
    """``{item key: allowed choices}`` of a request's response schema, following ``$ref`` links."""
    schema = body["response_format"]["json_schema"]["schema"]
    definitions = schema.get("$defs", {})
    enums = {}
    for key, prop in schema["properties"].items():
        if "$ref" in prop:
            prop = definitions[prop["$ref"].removeprefix("#/$defs/")]
        enums[key] = prop["properties"]["choice"]["enum"]
    return enums


@dataclass
class Received:
    """One request as the server saw it."""

    at: float
    body: dict[str, Any]
    authorization: str
    status: int
    behaviour: str


@dataclass
class FakeOpenAI(ScriptedServer):
    behaviours = BEHAVIOURS
    url_path = "/v1"
    latency_s: float = 0.0
    requests_per_minute: float | None = None
    retry_after_s: float = 1.0
    slow_s: float = 3.0
    oracle: Oracle = best_overlap
    received: list[Received] = field(default_factory=list)

    # -- control -------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.received.clear()

    def bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.received if r.status == 200]

    # -- serving -------------------------------------------------------------------------

    def rate_per_second(self) -> float | None:
        return self.requests_per_minute / 60.0 if self.requests_per_minute else None

    def respond(self, body: dict[str, Any], authorization: str = "") -> tuple[int, dict[str, str], dict[str, Any], float]:
        """Status, headers, JSON body and delay for one request."""
        behaviour, wait = self._next()
        retry_after = wait if wait is not None else self.retry_after_s
        with self._lock:
            self.received.append(Received(time.monotonic(), body, authorization, _STATUS.get(behaviour, 200), behaviour))
        if behaviour == "rate_limit":
            headers = {"retry-after": str(math.ceil(retry_after)), "retry-after-ms": str(math.ceil(retry_after * 1000))}
            return 429, headers, _error("Rate limit reached for requests per min.", "requests", "rate_limit_exceeded"), 0.0
        if behaviour == "quota":
            return 429, {}, _error(
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                "insufficient_quota",
            ), 0.0
        if behaviour == "error":
            return 500, {}, _error("The server had an error while processing your request.", "server_error", None), 0.0
        delay = self.slow_s if behaviour == "slow" else self.latency_s
        return 200, {}, self._completion(body, behaviour), delay

    def _completion(self, body: dict[str, Any], behaviour: str) -> dict[str, Any]:
        document = json.loads(body["messages"][-1]["content"])
        answers = {}
        for key, entry in document.items():
            choice = self.oracle(entry["item"], read_candidates(entry))
            if behaviour == "outside":
                choice = "c99"
            answers[key] = {"reason": f"oracle chose {choice}", "choice": choice, "confidence": 0.9}
        content: str | None = json.dumps(answers)
        refusal = None
        finish = "stop"
        if behaviour == "malformed":
            content = "Sure! Here is the answer: " + content[:-1]
        elif behaviour == "length":
            content, finish = content[: len(content) // 2], "length"
        elif behaviour == "refusal":
            content, refusal = None, "I'm sorry, I can't help with that request."
        prompt_chars = sum(len(m["content"]) for m in body["messages"]) + len(json.dumps(body.get("response_format")))
        prompt_tokens = math.ceil(prompt_chars / 4)
        completion_tokens = math.ceil(len(content or refusal or "") / 4)
        return {
            "id": f"chatcmpl-{len(self.received)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": refusal},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


_STATUS = {"rate_limit": 429, "quota": 429, "error": 500}


def _error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class _Handler(QuietHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    fake: FakeOpenAI

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {}, json.dumps(_error(f"no route {self.path}", "invalid_request_error", None)).encode())
            return
        status, headers, payload, delay = self.fake.respond(body, self.headers.get("authorization", ""))
        if delay:
            time.sleep(delay)
        self._send(status, headers, json.dumps(payload).encode())


FakeOpenAI.handler = _Handler
