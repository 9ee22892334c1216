"""A local OpenAI-compatible server: Chat Completions and Responses, scripted by the bearer key.

Answers are deterministic ("draft: " + the last user message; tokens are counted as words), so
tests and benchmarks need no model. What happens is chosen by the key, so a test needs no
control call:

    sk-ok-*          answers
    sk-401-*         401 (the error message echoes the whole key, as a careless server might)
    sk-403-*         403        sk-400-*   400        sk-307-*   a redirect to the cloud metadata address
    sk-html-*        200 with an HTML page (a captive portal's, a proxy's), not OpenAI's shape
    sk-500x<N>-*     the first N requests for that key answer 500, then it answers
    sk-429x<N>-*     the first N answer 429 with Retry-After: 1, then it answers
    sk-slowx<N>-*    the first N wait 35 s (OPENAI_SERVER_SLOW_SECONDS) or until the caller hangs up
    anything else    401

`GET /_requests` lists what was received (the key's last four characters only, path, model,
message text, attempt number from `x-stainless-retry-count`, status answered); `POST /_reset`
forgets it. `running_openai_server()` runs the app with uvicorn in a process of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

SLOW_SECONDS = float(os.environ.get("OPENAI_SERVER_SLOW_SECONDS", "35"))
_KEY = re.compile(r"^sk-(ok|401|403|400|307|html|500x(\d+)|429x(\d+)|slowx(\d+))-")
_ERRORS = {  # status: (code, message), OpenAI's own where it has one
    401: ("invalid_api_key", "Incorrect API key provided: {key}."),
    403: ("unsupported_country_region_territory", "Country, region, or territory not supported."),
    # Quotes the prompt, as content-policy refusals do: a failure message can carry run content.
    400: ("invalid_prompt", "Invalid prompt: {text!r} was not accepted."),
    500: ("server_error", "The server had an error while processing your request."),
    429: ("rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
}
_METADATA = "http://169.254.169.254/v1/chat/completions"

app = FastAPI(title="OpenAI-compatible test server", openapi_url=None)
requests_seen: list[dict[str, Any]] = []
attempts: Counter[str] = Counter()  # requests received per key


def _error(status: int, key: str, text: str = "") -> JSONResponse:
    code, message = _ERRORS[status]
    kind = "server_error" if status >= 500 else "invalid_request_error"
    error = {
        "message": message.format(key=key, text=text[:200]),
        "type": kind,
        "param": None,
        "code": code,
    }
    headers = {"Retry-After": "1"} if status == 429 else {}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _words(text: str) -> int:
    return len(text.split())


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


async def _received(request: Request, messages: list[dict[str, Any]]) -> Response | None:
    """Record the request; the scripted failure to answer with (None: answer)."""
    auth = request.headers.get("authorization", "")
    key = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
    attempts[key] += 1
    body = await request.json()
    entry = {
        "key": key[-4:],
        "path": request.url.path,
        "model": body.get("model"),
        "text": "\n".join(_text(m.get("content")) for m in messages),
        "attempt": int(request.headers.get("x-stainless-retry-count", "0")),
        "status": 200,
    }
    requests_seen.append(entry)
    match = _KEY.match(key)
    failure: Response | None = None
    if match is None:
        failure = _error(401, key)
    elif match[1] in ("401", "403", "400"):
        failure = _error(int(match[1]), key, entry["text"])
    elif match[1] == "307":
        failure = Response(status_code=307, headers={"Location": _METADATA})
    elif match[1] == "html":
        failure = HTMLResponse("<html><body>Sign in to the network</body></html>")
    elif match[2] and attempts[key] <= int(match[2]):
        failure = _error(500, key)
    elif match[3] and attempts[key] <= int(match[3]):
        failure = _error(429, key)
    elif match[4] and attempts[key] <= int(match[4]):
        # Sleeps until the caller gives up (or SLOW_SECONDS pass), then answers all the same.
        for _ in range(int(SLOW_SECONDS / 0.05)):
            if await request.is_disconnected():
                break
            await asyncio.sleep(0.05)
    if failure is not None:
        entry["status"] = failure.status_code
    return failure


def _draft(messages: list[dict[str, Any]], limit: int | None) -> tuple[list[str], bool]:
    """The reply's words (at most `limit`), and whether the limit cut it short."""
    last = next(
        (_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    words = ["draft:", *last.split()]
    return (words[:limit], True) if limit is not None and len(words) > limit else (words, False)


@app.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    body = await request.json()
    messages = body.get("messages", [])
    failure = await _received(request, messages)
    if failure is not None:
        return failure
    # fmt: off
    words, cut = _draft(messages, body.get("max_completion_tokens") or body.get("max_tokens"))
    prompt, finish = sum(_words(_text(m.get("content"))) for m in messages), "length" if cut else "stop"
    usage = {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)}
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": f"{body.get('model')}-local"}
    if not body.get("stream"):
        message = {"role": "assistant", "content": " ".join(words), "refusal": None}
        choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        return JSONResponse({**base, "object": "chat.completion", "choices": [choice], "usage": usage})
    # fmt: on

    async def chunks() -> AsyncIterator[str]:
        chunk = {**base, "object": "chat.completion.chunk"}
        for i, word in enumerate(words):
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
            yield f"data: {json.dumps({**chunk, 'choices': [{'index': 0, 'delta': delta, 'finish_reason': None}]})}\n\n"
        yield f"data: {json.dumps({**chunk, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': finish}]})}\n\n"
        if (body.get("stream_options") or {}).get("include_usage"):
            yield f"data: {json.dumps({**chunk, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")


@app.post("/v1/responses")
async def responses(request: Request) -> Response:
    body = await request.json()
    given = body.get("input", "")
    messages = [{"role": "user", "content": given}] if isinstance(given, str) else given
    if body.get("instructions"):
        messages = [{"role": "system", "content": body["instructions"]}, *messages]
    failure = await _received(request, messages)
    if failure is not None:
        return failure
    words, cut = _draft(messages, body.get("max_output_tokens"))
    prompt = sum(_words(_text(m.get("content"))) for m in messages)
    # fmt: off
    content = {"type": "output_text", "text": " ".join(words), "annotations": []}
    message = {"type": "message", "id": f"msg_{uuid.uuid4().hex}", "role": "assistant",
               "status": "completed", "content": [content]}
    usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": len(words), "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": prompt + len(words)}
    return JSONResponse({
        "id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
        "model": f"{body.get('model')}-local", "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "output": [message], "usage": usage, "error": None, "parallel_tool_calls": True,
        "tool_choice": "auto", "tools": [],
    })
    # fmt: on


@app.get("/_requests")
async def list_requests() -> list[dict[str, Any]]:
    return requests_seen


@app.post("/_reset")
async def reset() -> dict[str, bool]:
    requests_seen.clear()
    attempts.clear()
    return {"ok": True}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_openai_server(*, within: float = 30.0) -> Iterator[str]:
    """This app under uvicorn in a process of its own on a free loopback port; yields its base URL
    (`http://127.0.0.1:PORT/v1`, what the `openai` SDK takes as `base_url`)."""
    port = _free_port()
    args = [sys.executable, "-m", "uvicorn", f"{__name__}:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--timeout-graceful-shutdown", "1"]  # fmt: skip
    process = subprocess.Popen(args, cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + within
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the OpenAI-compatible server exited with {process.returncode}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/_requests", timeout=1).raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
