"""The real Temporal UI (the dev server's, started as `blocks dev` starts it, with
`--ui-codec-endpoint` at the API) in Debian's chromium: a signed-in operator's run page shows the
run's decoded input through the API's codec endpoint; without a session it shows none of it.

The session cookie (`__Host-`, Secure) is the API's own, for 127.0.0.1: the UI's page on
another port of 127.0.0.1 is the same site, and chromium sends a Secure cookie to loopback over
plain http. start-dev has no setting to make the UI send it (`credentials: include`): the
operator ticks that in the UI's Codec Server settings, which the UI keeps in localStorage, as the
test's init script writes it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Response, Route, async_playwright, expect
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from blocks.api.identity.sessions import SESSION_COOKIE
from blocks.infra.crypto.signing import parse_signing_key
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.infra.embedded.supervisor import port_open
from blocks.infra.embedded.temporal import EmbeddedTemporal
from blocks.workers.main import build_worker
from tests.browser.test_api_docs import CHROMIUM, CHROMIUM_ARGS
from tests.support import (
    DATA_CONVERTER,
    EXAMPLE_WORKFLOWS,
    EXPENSE,
    SIGNING_KEY,
    free_port,
    make_org,
    running_stack,
    start_test_session,
    wait_for_status,
)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="chromium is not installed (Debian: apt-get install chromium; `make test` does it)",
)
_TIMEOUT_MS = 30_000
# What the UI's Codec Server settings write when an operator overrides the endpoint and ticks
# "Include cross-origin credentials" (stores of src/lib/stores/data-encoder-config.ts).
_CODEC_SETTINGS = """
if (location.origin === %(ui)s) {
  localStorage.setItem("endpoint", JSON.stringify(%(endpoint)s));
  localStorage.setItem("includeCredentials", "true");
  localStorage.setItem("overrideRemoteCodecConfiguration", "true");
}
"""


@asynccontextmanager
async def _temporal_with_ui(
    tmp_path: Path, client_port: int, ui_port: int, codec_endpoint: str
) -> AsyncIterator[None]:
    server = EmbeddedTemporal(
        tmp_path / "temporal", port=client_port, ui_port=ui_port, codec_endpoint=codec_endpoint
    )
    await asyncio.to_thread(server.start)
    try:
        for _ in range(300):
            if await asyncio.to_thread(port_open, "127.0.0.1", ui_port):
                break
            await asyncio.sleep(0.1)
        yield
    finally:
        await asyncio.to_thread(server.stop)


async def _open_run(
    browser: Browser,
    url: str,
    decode: str,
    *,
    setup: str | None = None,
    token: str | None = None,
) -> tuple[Page, Response]:
    """The run's page in a fresh context (with the UI's codec settings and the session cookie,
    when given; no request leaves the loopback interface) and the codec's answer to its decode."""
    context = await browser.new_context()
    context.set_default_timeout(_TIMEOUT_MS)

    async def only_loopback(route: Route) -> None:
        if route.request.url.startswith("http://127.0.0.1:"):
            await route.continue_()
        else:
            await route.abort()

    await context.route("**/*", only_loopback)
    if setup is not None:
        await context.add_init_script(setup)
    if token is not None:
        # What sign-in sets (identity.sessions.set_session_cookie), for the API's host.
        await context.add_cookies(
            [
                {
                    "name": SESSION_COOKIE,
                    "value": token,
                    "domain": "127.0.0.1",
                    "path": "/",
                    "secure": True,
                    "httpOnly": True,
                    "sameSite": "Lax",
                }
            ]
        )
    page = await context.new_page()
    # The run's page asks the codec once it has the history: its answer is what we look at.
    async with page.expect_response(
        lambda r: r.url.startswith(decode) and r.request.method == "POST"
    ) as answer:
        await page.goto(url)
    return page, await answer.value


async def test_the_temporal_ui_shows_a_run_decoded_to_a_signed_in_operator_only(
    engine: AsyncEngine, postgres: PostgresCredentials, tmp_path: Path
) -> None:
    org = await make_org(engine)
    marker = f"ui-marker-{uuid.uuid4().hex[:10]}"
    temporal_port, ui_port = free_port(), free_port()
    ui = f"http://127.0.0.1:{ui_port}"
    task_queue = f"ui-codec-{uuid.uuid4().hex[:8]}"
    # Lazy: the API comes first, so the UI's server can be started pointing at its port.
    client = await Client.connect(
        f"127.0.0.1:{temporal_port}", data_converter=DATA_CONVERTER, lazy=True
    )
    async with running_stack(
        engine=engine,
        temporal=client,
        database_url=postgres.url(),
        task_queue=task_queue,
        with_worker=False,
        extra_settings={"codec_cors_origins": f"{ui},http://localhost:{ui_port}"},
    ) as stack:
        endpoint = f"{stack.base_url}/v1/codec"
        async with _temporal_with_ui(tmp_path, temporal_port, ui_port, endpoint):
            # A worker needs a client that connected at once.
            worker_client = await Client.connect(
                f"127.0.0.1:{temporal_port}", data_converter=DATA_CONVERTER
            )
            worker = build_worker(
                worker_client,
                engine,
                task_queue=task_queue,
                signer=parse_signing_key(SIGNING_KEY),
                workflows=EXAMPLE_WORKFLOWS,
            )
            async with worker, stack.http() as http:
                started = await http.post(
                    "/v1/runs",
                    json={
                        "workflow": "expense_approval",
                        "input": {**EXPENSE, "description": marker},
                    },
                    headers=org["operator"].headers,
                )
                assert started.status_code == 201, started.text
                run_id = started.json()["id"]
                await wait_for_status(
                    http,
                    run_id,
                    org["operator"].headers,
                    status="running",
                    stage="awaiting_approval",
                )
                history = await worker_client.get_workflow_handle(f"run-{run_id}").fetch_history()
                sealed = history.events[0].workflow_execution_started_event_attributes.input
                ciphertext = base64.b64encode(sealed.payloads[0].data).decode()
                token = await start_test_session(engine, org["operator"].user_id, org.id)
                await _check_in_browser(ui, endpoint, run_id, marker, ciphertext, token)


async def _check_in_browser(
    ui: str, endpoint: str, run_id: str, marker: str, ciphertext: str, token: str
) -> None:
    run_page = f"{ui}/namespaces/default/workflows/run-{run_id}"
    decode = f"{endpoint}/decode"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            # No session, the endpoint as the server configures it (no credentials): the UI asks
            # the codec, is refused, and shows the input as Temporal holds it: ciphertext.
            page, refused = await _open_run(browser, run_page, decode)
            assert refused.status == 401
            shown = page.get_by_role("textbox", name="Input", exact=True)
            await expect(page.get_by_text("Codec Server could not connect").last).to_be_visible(
                timeout=_TIMEOUT_MS
            )
            await expect(shown).to_contain_text(ciphertext[:40], timeout=_TIMEOUT_MS)
            await expect(shown).not_to_contain_text(marker)
            await page.context.close()

            # Signed in, with credentials on: the same box shows the run's input, decoded.
            setup = _CODEC_SETTINGS % {"ui": json.dumps(ui), "endpoint": json.dumps(endpoint)}
            page, answered = await _open_run(browser, run_page, decode, setup=setup, token=token)
            assert answered.status == 200
            assert f"{SESSION_COOKIE}={token}" in (await answered.request.all_headers())["cookie"]
            shown = page.get_by_role("textbox", name="Input", exact=True)
            await expect(shown).to_contain_text(marker, timeout=_TIMEOUT_MS)
            await expect(shown).not_to_contain_text(ciphertext[:40])
            await expect(page.get_by_text("Codec Server could not connect")).to_have_count(0)
        finally:
            await browser.close()
