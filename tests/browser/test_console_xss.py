"""The XSS corpus (tests/xss_corpus.py) in every place a person's text reaches the console, opened
in Debian's chromium by a signed-in member: run inputs (step titles in the inbox, on step and run
pages), decision comments (rich text), member names, file names (as the API keeps them: it
drops `"<>|:*?`), form values shown again after a refused post, and filter values. Each page is checked in the browser: nothing a payload holds ran (traps
on alert and friends, dialogs, a `window.__xss` setter), no smuggled markup is in the DOM (see
tests/browser/xss_checks.py), escaped text reads as the payload's own characters, and the page
logged no CSP violation or console error (CSP would block a script, but escaping and
sanitizing alone must hold)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from playwright.async_api import Browser, Page
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.db import session_factory
from blocks.models.identity.api_keys import create_api_key
from blocks.models.identity.orgs import add_member
from tests.browser.console_browser import Watched, watched_page
from tests.browser.xss_checks import Traps, attribute_values, dom_problems, texts
from tests.support import Member, Org, Stack, make_org, start_test_session, wait_for_status
from tests.unit.test_file_types import minimal_pdf
from tests.xss_corpus import XSS_PAYLOADS

# Two purchases, each with half the corpus as its finance reviewers' comments.
HALF = (len(XSS_PAYLOADS) + 1) // 2
COMMENTED = (XSS_PAYLOADS[:HALF], XSS_PAYLOADS[HALF:])
# A member's display name holds at most 200 characters.
NAMES = [p for p in XSS_PAYLOADS if len(p) <= 200][:HALF]
# A value typed into a text input loses its line breaks; a filter is trimmed and at most 100.
TYPED = [p for p in XSS_PAYLOADS if "\n" not in p and "\t" not in p and len(p) <= 100]


def _expense_title(payload: str) -> str:
    return f"Expense of 120.50 EUR: {payload}"


async def _add_members(engine: AsyncEngine, org: Org, people: dict[str, list[Role]]) -> None:
    """More members of `org`, each with an API key, named by their key in `people`'s order."""
    owner = org["owner"]
    ctx = OrgContext(
        org_id=OrgId(org.id), user_id=owner.user_id, roles=(Role.OWNER,), auth=AuthMethod.SYSTEM
    )
    async with session_factory(engine)() as session, session.begin():
        for name, roles in people.items():
            user, _ = await add_member(
                ctx,
                session,
                email=f"{uuid.uuid4().hex[:10]}@{org.slug}.test",
                display_name=name,
                roles=roles,
            )
            _, key = await create_api_key(ctx, session, user_id=user.id, name="k", roles=roles)
            org.members[name] = Member(user.id, user.email, key)


async def _start(http: httpx.AsyncClient, org: Org, workflow: str, params: object) -> str:
    started = await http.post(
        "/v1/runs", json={"workflow": workflow, "input": params}, headers=org["operator"].headers
    )
    assert started.status_code == 201, started.text
    return str(started.json()["id"])


async def _purchase(http: httpx.AsyncClient, org: Org, title: str, comments: list[str]) -> str:
    """A purchase whose review got one finance vote per comment (finance: the members named by
    NAMES) and the legal vote, now waiting for its director: `viewer`."""
    finance = NAMES[: len(comments)]
    run_id = await _start(
        http,
        org,
        "purchase_approval",
        {
            "amount": "25000.00",
            "description": title,
            "finance": [str(org[name].user_id) for name in finance],
            "legal": [str(org["admin"].user_id)],
            "director": str(org["viewer"].user_id),
        },
    )
    # Within a minute: the expenses start at the same time, on a shared machine.
    await wait_for_status(
        http,
        run_id,
        org["operator"].headers,
        status="running",
        stage="awaiting_approval",
        within=60,
    )
    # The step stays open while legal has not voted: every finance vote is recorded.
    for name, comment in [*zip(finance, comments, strict=True), ("admin", "legal ok")]:
        voted = await http.post(
            f"/v1/runs/{run_id}/steps/review/decisions",
            json={"decision": "approve", "comment": comment},
            headers=org[name].headers,
        )
        assert voted.status_code == 200, voted.text
    return run_id


async def _attach(http: httpx.AsyncClient, org: Org, run_id: str) -> list[str]:
    """Every payload as the file name of a real PDF on the run; the names as the API keeps them
    (it takes a name's last path part and drops control characters and `"<>|:*?`)."""
    names = []
    for payload in XSS_PAYLOADS:
        uploaded = await http.post(
            f"/v1/runs/{run_id}/attachments",
            files={"file": (f"{payload}.pdf", minimal_pdf(), "application/pdf")},
            headers=org["operator"].headers,
        )
        assert uploaded.status_code == 201, uploaded.text
        names.append(str(uploaded.json()["name"]))
    return names


async def _wait_for_inbox(http: httpx.AsyncClient, member: Member, count: int) -> None:
    for _ in range(600):
        inbox = await http.get("/v1/inbox", params={"limit": 200}, headers=member.headers)
        assert inbox.status_code == 200, inbox.text
        if len(inbox.json()["items"]) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the inbox never held {count} steps")


def _step_headings(found: list[str]) -> list[str]:
    """A run page's step headings without the step's id after them."""
    return [heading.rsplit(" (", 1)[0] for heading in found]


async def _inert(
    watched: Watched, traps: Traps, url: str | None = None, *, status: int = 200
) -> Page:
    """Open `url` (or check the page as it is) and assert nothing in it ran or got through."""
    page = watched.page
    if url is not None:
        response = await page.goto(url)
        assert response is not None, url
        assert response.status == status, (url, response.status)
        # No payload navigated away.
        here, there = httpx.URL(page.url), httpx.URL(url)
        assert (here.path, here.params) == (there.path, there.params), page.url
    await page.wait_for_load_state("load")
    found = {
        "smuggled markup": await dom_problems(page),
        "ran": traps.ran,
        "csp violations": watched.violations,
        "console errors": watched.errors,
        "requests elsewhere": watched.outside,
    }
    assert {what: items for what, items in found.items() if items} == {}, page.url
    watched.assert_clean()
    return page


async def test_the_xss_corpus_is_inert_on_every_console_page(
    console_browser: Browser, stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    # One member who may decide, read runs and read the audit log: every page, one session.
    await _add_members(engine, org, {"viewer": [Role.APPROVER, Role.OPERATOR, Role.AUDITOR]})
    await _add_members(engine, org, {name: [Role.APPROVER] for name in NAMES})
    async with stack.http() as http:
        limit = asyncio.Semaphore(6)

        async def expense(payload: str) -> str:
            async with limit:
                params = {"amount": "120.50", "currency": "EUR", "description": payload}
                return await _start(http, org, "expense_approval", params)

        first = await expense(XSS_PAYLOADS[0])
        others, purchases, file_names = await asyncio.gather(
            asyncio.gather(*(expense(p) for p in XSS_PAYLOADS[1:])),
            asyncio.gather(
                *(
                    _purchase(http, org, title, list(comments))
                    for title, comments in zip(XSS_PAYLOADS[-2:], COMMENTED, strict=True)
                )
            ),
            _attach(http, org, first),
        )
        expenses = [first, *others]
        await _wait_for_inbox(http, org["viewer"], len(expenses) + len(purchases))

    token = await start_test_session(engine, org["viewer"].user_id, org.id)
    async with watched_page(console_browser, stack.base_url) as watched:
        await watched.use_session(token)
        traps = Traps()
        await traps.install(watched.context, watched.page)

        # Titles: every payload as an expense's description, in the inbox's step links.
        page = await _inert(watched, traps, "/console/inbox")
        shown = await texts(page, "table.inbox tbody td[data-label=Step] a")
        assert [t for t in map(_expense_title, XSS_PAYLOADS) if t not in shown] == []

        # One expense's step and run page: the title as heading, page title and the run's
        # input; every payload as the name of a file attached to it.
        step_url = f"/console/runs/{expenses[0]}/steps/approve"
        page = await _inert(watched, traps, step_url)
        title = _expense_title(XSS_PAYLOADS[0])
        assert await texts(page, "main h1") == [title]
        assert await page.title() == f"{title} · Blocks"
        assert XSS_PAYLOADS[0] in await texts(page, "#run-input dd")
        assert sorted(await texts(page, "a.attachment-link")) == sorted(file_names)
        page = await _inert(watched, traps, f"/console/runs/{expenses[0]}")
        assert title in _step_headings(await texts(page, "main h3"))
        assert XSS_PAYLOADS[0] in await texts(page, "#run-input dd")
        assert sorted(await texts(page, "a.attachment-link")) == sorted(file_names)

        # Comments (rich text) and member names: every payload as a finance reviewer's comment.
        for run_id, title, comments in zip(purchases, XSS_PAYLOADS[-2:], COMMENTED, strict=True):
            page = await _inert(watched, traps, f"/console/runs/{run_id}/steps/review")
            purchase_title = f"Purchase of 25000.00: {title}"
            assert await texts(page, "main h1") == [purchase_title]
            assert len(await texts(page, "ul.votes > li")) == len(comments) + 1
            who = await texts(page, "table.step-history td[data-label=Who]")
            for name in NAMES[: len(comments)]:
                assert f"{name} <{org[name].email}>" in who
            page = await _inert(watched, traps, f"/console/runs/{run_id}")
            assert purchase_title in _step_headings(await texts(page, "main h3"))

        # Form values: a refused decision shows the form again as typed.
        director = f"/console/runs/{purchases[0]}/steps/director"
        page = await _inert(watched, traps, director)
        await page.get_by_label("Budget Code").fill(TYPED[0])
        await page.get_by_label("Comment").fill(TYPED[1])
        async with page.expect_response(lambda r: r.request.method == "POST") as answer:
            await page.get_by_role("button", name="Approve").click()
        assert (await answer.value).status == 422
        await _inert(watched, traps)
        assert await attribute_values(page, "#field-budget_code", "value") == [TYPED[0]]
        assert await texts(page, "#decision-comment") == [TYPED[1]]

        # Filter values, shown again in the filter forms of the audit log and the runs list.
        for start in range(2, 12, 2):
            action, actor = TYPED[start], TYPED[start + 1]
            query = httpx.QueryParams({"action": action, "actor_id": actor})
            page = await _inert(watched, traps, f"/console/audit?{query}")
            assert await attribute_values(page, "#filter-action", "value") == [action]
            assert await attribute_values(page, "#filter-actor", "value") == [actor]
        filters = {
            "workflow": TYPED[12],
            "requested_by": TYPED[13],  # not a member id: refused (422), the form shown again
            "pending_approver": TYPED[14],
        }
        page = await _inert(
            watched, traps, f"/console/runs?{httpx.QueryParams(filters)}", status=422
        )
        assert await attribute_values(page, "#filter-workflow", "value") == [TYPED[12]]
        assert await attribute_values(page, "#filter-requested-by", "value") == [TYPED[13]]
        assert await attribute_values(page, "#filter-approver", "value") == [TYPED[14]]
    assert traps.ran == []
