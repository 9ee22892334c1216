"""Tenant isolation's third layer, kept by a check: an organization comes from the context resolver.

Row-level security (the last layer) and the catalogue test behind it keep rows apart; this walk
over the source keeps the code honest above them. Two rules, each shown to catch a deliberate
violation fed to it as a source string:

(a) Only the context resolver reads, from a request, what decides the organization. Outside the
    modules in CONTEXT_RESOLVERS (and the narrower RULE_EXCEPTIONS), a module may not
    - `cookies`: read `<anything>.cookies` (the session cookie is a credential: only the resolver
      turns it into a person and an organization);
    - `resolved-context`: touch `<anything>.state.ctx` / `.state.session`, also through
      getattr/setattr/hasattr (routes get the context as the `OrgCtx`/`Person` dependency;
      reading it from request.state skips the resolver, writing it forges one);
    - `org-key`: read a key naming an organization (`org`, `org_id`, `x-org-id`, `organization`,
      `tenant`, ...) as a literal subscript or `.get`/`.getlist` key of the request's headers,
      query or path parameters or cookies, anywhere; and, in blocks/api (the request edge, where
      a parsed form or JSON body is request input), of anything;
    - `credential-header`: read the `authorization`, `cookie` or `x-api-key` header;
    - `org-parameter`: declare a route parameter naming an organization (path, query, header,
      cookie or body, by name or by alias), or take a body model with such a field.
    Keys given as variables are not judged: the rule reads names, not data flow.

(b) Data access takes an `OrgContext` first. Every public async function (or public async method)
    in blocks/models/ that touches a tenant table (it names a tenant model class, or its SQL text
    names a tenant table or a `blocks_*` SQL function) takes `OrgContext` as its first parameter,
    unless PRE_TENANT lists it with the reason it runs before an organization is known.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.unit.source_trees import parse

PACKAGE = Path(__file__).resolve().parents[2] / "blocks"

# --- (a) who may read the organization from a request ---------------------------------------

# Where a request's credentials become an OrgContext (or a signed-in person).
CONTEXT_RESOLVERS: dict[str, str] = {
    "blocks.api.deps": "the API key (Authorization) or the session cookie -> OrgContext",
    "blocks.api.identity.sessions": "the session cookie -> person, organization, origin check",
    "blocks.api.security_audit": "who and from where, for events before an organization exists",
    "blocks.api.agents.auth": "the agent token (Authorization) -> the agent's principal",
    "blocks.api.scim.auth": "the SCIM token (Authorization) -> its organization's SCIM context",
}

# One rule waived in one module, each for the reason given.
RULE_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("blocks.api.identity.auth.sign_in", "org-parameter"): (
        "the organization picker (POST /v1/auth/org) is how a session gets its organization: "
        "the chosen id is accepted only among the person's own active memberships"
    ),
    ("blocks.api.rate_limit", "resolved-context"): (
        "audits a refusal in the caller's organization: reads the context the resolver set "
        "(never client input), from inside the resolver's own rate-limit call"
    ),
    ("blocks.api.identity.sso.flow", "cookies"): (
        "reads only the single sign-on browser binding (`__Host-blocks_sso`), a random value that "
        "ties a sign-in to the browser that started it; it names no person or organization"
    ),
    ("blocks.api.identity.sso.start", "org-parameter"): (
        "a sign-in URL names the organization by slug, as any public URL does: it lists the "
        "organization's enabled providers and starts a sign-in; nothing else is served"
    ),
    ("blocks.api.identity.sso.oidc", "org-parameter"): (
        "the OIDC callback URL (registered at the provider) names the organization by slug; a "
        "session opens only for the person the provider's signed id_token proves"
    ),
    ("blocks.api.identity.sso.saml", "org-parameter"): (
        "the SAML ACS and SP metadata URLs name the organization by slug; a session opens only "
        "for the person the provider's signed assertion proves"
    ),
    ("blocks.api.console.sign_in.sessions", "org-key"): (
        "the console's organization picker posts the chosen id to the picker's own route function "
        "(sign_in.pick_organization), which accepts it only among the person's active memberships"
    ),
    ("blocks.api.console.sign_in.pages", "org-parameter"): (
        "the console's single sign-on form names the organization by slug, as the public SSO URL "
        "does (GET /v1/sso/{org_slug}); it only leads to that organization's sign-in"
    ),
    ("blocks.api.agents.well_known", "org-parameter"): (
        "the public agent card's URL names the organization by slug, as any public URL does: "
        "it serves only a card that organization marked public, to anyone, and nothing else"
    ),
    ("blocks.api.approvals.decision_links", "cookies"): (
        "the decision-link resolver asks only whether a session cookie is present before "
        "handing the request to sessions.signed_in (which reads and checks it)"
    ),
}

ROUTE_DECORATORS = frozenset(
    {"get", "post", "put", "patch", "delete", "head", "options", "api_route", "websocket"}
)
_ORG_NAME = re.compile(r"(^|_)(org|orgs|organi[sz]ations?|tenants?)(_|$)", re.IGNORECASE)
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "x-api-key"})
_MAPPING_READS = frozenset({"get", "getlist", "pop"})
_REQUEST_PARTS = frozenset({"headers", "query_params", "path_params", "cookies"})


def names_an_org(name: str) -> bool:
    """`org_id`, `X-Org-Id`, `organization`, `tenant_id`... (not `origin`, `organ`)."""
    return bool(_ORG_NAME.search(name.replace("-", "_")))


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    rule: str
    what: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} [{self.rule}] {self.what}"


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _read_keys(tree: ast.AST) -> Iterator[tuple[ast.AST, ast.AST, str]]:
    """(node, container, key) for every literal-key read: `x["k"]` and `x.get("k")`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            key = _literal(node.slice)
            if key is not None:
                yield node, node.value, key
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _MAPPING_READS
            and node.args
        ):
            key = _literal(node.args[0])
            if key is not None:
                yield node, node.func.value, key


def _reaches_resolved_context(node: ast.AST) -> bool:
    """`x.state.ctx`, `x.state.session`, or getattr/setattr/hasattr(x.state, "ctx"/"session")."""
    if isinstance(node, ast.Attribute) and node.attr in ("ctx", "session"):
        return isinstance(node.value, ast.Attribute) and node.value.attr == "state"
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
        and len(node.args) >= 2
        and isinstance(node.args[0], ast.Attribute)
        and node.args[0].attr == "state"
        and _literal(node.args[1]) in ("ctx", "session")
    )


def org_body_models(sources: Mapping[str, str]) -> dict[str, frozenset[str]]:
    """Class name -> its fields naming an organization (inherited ones too), across modules."""
    fields: dict[str, set[str]] = {}
    bases: dict[str, list[str]] = {}
    for source in sources.values():
        for node in ast.walk(parse(source)):
            if not isinstance(node, ast.ClassDef):
                continue
            own = {
                item.target.id
                for item in node.body
                if isinstance(item, ast.AnnAssign)
                and isinstance(item.target, ast.Name)
                and names_an_org(item.target.id)
            }
            fields.setdefault(node.name, set()).update(own)
            bases.setdefault(node.name, []).extend(
                base.id if isinstance(base, ast.Name) else base.attr
                for base in node.bases
                if isinstance(base, ast.Name | ast.Attribute)
            )

    def inherited(name: str, seen: frozenset[str]) -> set[str]:
        found = set(fields.get(name, ()))
        for base in bases.get(name, ()):
            if base not in seen:
                found |= inherited(base, seen | {base})
        return found

    return {name: frozenset(f) for name in fields if (f := inherited(name, frozenset({name})))}


def _annotation_names(node: ast.AST | None) -> set[str]:
    if node is None:
        return set()
    return {
        n.id if isinstance(n, ast.Name) else n.attr
        for n in ast.walk(node)
        if isinstance(n, ast.Name | ast.Attribute)
    }


def _is_route(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(
        isinstance(d, ast.Call)
        and isinstance(d.func, ast.Attribute)
        and d.func.attr in ROUTE_DECORATORS
        for d in function.decorator_list
    )


def _route_parameter_violations(
    module: str, tree: ast.AST, body_models: Mapping[str, frozenset[str]]
) -> Iterator[Violation]:
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef) or not _is_route(
            function
        ):
            continue
        arguments = function.args
        defaults: list[ast.expr | None] = [None] * (
            len(arguments.args) - len(arguments.defaults)
        ) + list(arguments.defaults)
        pairs = [
            *zip(arguments.args, defaults, strict=True),
            *zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True),
        ]
        for arg, default in pairs:
            where = f"route {function.name}() parameter {arg.arg!r}"
            if names_an_org(arg.arg):
                yield Violation(module, arg.lineno, "org-parameter", f"{where} names an org")
            declared = [n for n in (arg.annotation, default) if n is not None]
            for keyword in (k for n in declared for k in ast.walk(n) if isinstance(k, ast.keyword)):
                alias = _literal(keyword.value)
                if keyword.arg == "alias" and alias and names_an_org(alias):
                    yield Violation(module, arg.lineno, "org-parameter", f"{where} alias {alias!r}")
            for model in sorted(_annotation_names(arg.annotation) & set(body_models)):
                fields = ", ".join(sorted(body_models[model]))
                yield Violation(
                    module, arg.lineno, "org-parameter", f"{where}: body {model} has {fields}"
                )


def request_violations(
    module: str, source: str, body_models: Mapping[str, frozenset[str]] | None = None
) -> list[Violation]:
    """Rule (a) for one module (dotted name), given its source, before any allowance."""
    tree = parse(source)
    found: list[Violation] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "cookies":
            found.append(Violation(module, node.lineno, "cookies", ast.unparse(node)))
        elif _reaches_resolved_context(node):
            found.append(Violation(module, node.lineno, "resolved-context", ast.unparse(node)))
    edge = module == "blocks.api" or module.startswith("blocks.api.")
    for node, container, key in _read_keys(tree):
        line = getattr(node, "lineno", 0)
        from_request = isinstance(container, ast.Attribute) and container.attr in _REQUEST_PARTS
        if names_an_org(key) and (edge or from_request):
            found.append(Violation(module, line, "org-key", ast.unparse(node)))
        elif getattr(container, "attr", None) == "headers" and key.lower() in _CREDENTIAL_HEADERS:
            found.append(Violation(module, line, "credential-header", ast.unparse(node)))
    models = org_body_models({module: source}) | dict(body_models or {})
    found.extend(_route_parameter_violations(module, tree, models))
    return found


def allowed(violation: Violation) -> bool:
    return (
        violation.module in CONTEXT_RESOLVERS
        or (violation.module, violation.rule) in RULE_EXCEPTIONS
    )


# --- (b) data access takes an OrgContext ------------------------------------------------------

# Tables with an organization column that are not organization data (the same list, with the
# same reason, is in tests/integration/test_tenant_rls_catalogue.py).
NOT_TENANT_DATA: dict[str, str] = {
    "user_sessions": "a person's own sign-in session; org_id is only where it currently acts",
}

# Public data-access functions that touch tenant tables before an organization is known.
PRE_TENANT: dict[str, str] = {
    # Credentials and tokens: the row names its organization (SECURITY DEFINER lookups, 0013).
    "blocks.models.identity.api_keys.resolve_api_key": "an API key -> its OrgContext",
    "blocks.models.identity.invites.find_invite": "an invite token -> the invite",
    "blocks.models.identity.invites.has_pending_invite": "closed sign-up: any live invite?",
    "blocks.models.approvals.decision_links.open_link": "a decision-link token -> the link",
    "blocks.models.integrations.slack.org_for_slack_team": "a signed Slack team -> its org",
    "blocks.models.agents.tokens.check_agent_token": "an agent token -> its principal",
    "blocks.models.identity.scim.tables.resolve_scim_token": "a SCIM token -> its OrgContext",
    # The public agent card: an organization's slug and an agent's name, from a public URL;
    # only a card marked public is read, under that organization's binding.
    "blocks.models.agents.registry.public_agent": "a public agent card by slug and name",
    # Sign-in: a person's own memberships across organizations (the picker, app.user_id).
    "blocks.models.identity.orgs.orgs_of_user": "the organization picker",
    # Making an organization: there is no context before it exists.
    "blocks.models.identity.orgs.create_org_with_owner": "a new organization and its owner",
    # Cross-organization maintenance: the worker's run-start reconciler finds runs left
    # `starting` in any organization (SECURITY DEFINER blocks_unsettled_run_starts, 0014),
    # then binds each one's.
    "blocks.models.approvals.runs.unsettled_start_ids": "the run-start reconciler's scan",
    # The payload codec's keys: the organization is the one a run's row (blocks_run_org, 0017)
    # or a sealed payload's authenticated metadata names, never client input.
    "blocks.models.keys.org_keys.DatabaseOrgKeys.run_org": "a workflow id -> its run's org",
    "blocks.models.keys.org_keys.live_org_key": "the codec: the organization's key to seal with",
    "blocks.models.keys.org_keys.org_key_by_id": "the codec: the key a payload names",
    # Run history keys (0019): the same, for the LLM step's payloads; the callers bind the
    # organization the run's row or the payload names. The sweeper destroys closed runs' keys
    # in every organization (SECURITY DEFINER blocks_destroy_closed_run_keys), returning a count.
    # The PubNub bridge's channel list: every live PubNub agent of every open organization, the
    # organizations listed first (closed_at only), then each one read bound to its own.
    "blocks.models.agents.pubnub_agents.all_pubnub_agents": "the PubNub bridge's agent list",
    "blocks.models.keys.run_keys.live_run_key": "the codec: the run's key to seal with",
    "blocks.models.keys.run_keys.wrapped_run_key": "the codec: the run key a payload names",
    "blocks.models.keys.run_keys.destroy_closed_run_keys": "the run-key sweeper's pass",
    # `blocks keys status | rotate`: operator maintenance over every organization, each bound
    # in turn.
    "blocks.models.keys.rotation.key_status": "what each master key wraps, per organization",
    "blocks.models.keys.rotation.rotate": "re-wraps each organization's keys",
    "blocks.models.integrations.slack.reseal_bot_tokens": "rotation: one organization's token",
    # Built only by key_request(ctx, ...): the object carries that context's organization.
    "blocks.models.audit.personal_data.KeyRequest.sealer": "org from the OrgContext it was made of",
}

_SQL_TABLE = re.compile(r"\b(?:from|join|update|into|table)\s+(?:public\.)?(\w+)", re.IGNORECASE)
_SQL_FUNCTION = re.compile(r"\b(blocks_\w+)\s*\(")


def tenant_models(sources: Mapping[str, str]) -> dict[str, str]:
    """Model class -> table, for every table class with an organization column."""
    found: dict[str, str] = {}
    for source in sources.values():
        for node in ast.walk(parse(source)):
            if not isinstance(node, ast.ClassDef):
                continue
            table = None
            org_column = False
            for item in node.body:
                if isinstance(item, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__tablename__" for t in item.targets
                ):
                    table = _literal(item.value)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    text = ast.unparse(item)
                    org_column = org_column or (
                        item.target.id == "org_id"
                        or "org_fk_column(" in text
                        or "organizations.id" in text
                    )
            if table and org_column and table not in NOT_TENANT_DATA:
                found[node.name] = table
    return found


def _strings(node: ast.AST) -> list[str]:
    return [s for n in ast.walk(node) if (s := _literal(n)) is not None]


def _touches(
    function: ast.AsyncFunctionDef, constants: Mapping[str, list[str]], models: Mapping[str, str]
) -> set[str]:
    """The tenant models, tenant tables and SQL functions the function's body uses."""
    tables = set(models.values())
    used: set[str] = set()
    for statement in function.body:
        for node in ast.walk(statement):
            if isinstance(node, ast.Name) and node.id in models:
                used.add(node.id)
            texts = _strings(node) if isinstance(node, ast.Constant) else []
            if isinstance(node, ast.Name) and node.id in constants:
                texts = constants[node.id]
            for text in texts:
                used |= {t for t in _SQL_TABLE.findall(text) if t in tables}
                used |= set(_SQL_FUNCTION.findall(text))
    return used


def _first_parameter_is_context(function: ast.AsyncFunctionDef, method: bool) -> bool:
    positional = [*function.args.posonlyargs, *function.args.args]
    if method and positional and positional[0].arg in ("self", "cls"):
        positional = positional[1:]
    if not positional or positional[0].annotation is None:
        return False
    annotation = positional[0].annotation
    name = _literal(annotation) or (
        annotation.id
        if isinstance(annotation, ast.Name)
        else annotation.attr
        if isinstance(annotation, ast.Attribute)
        else None
    )
    return name == "OrgContext"


def _public_async_functions(tree: ast.Module) -> Iterator[tuple[str, ast.AsyncFunctionDef, bool]]:
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef) and not node.name.startswith("_"):
            yield node.name, node, False
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, ast.AsyncFunctionDef) and not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", item, True


def data_access_violations(
    module: str, source: str, models: Mapping[str, str] | None = None
) -> list[Violation]:
    """Rule (b) for one module under blocks.models, given its source, before any allowance;
    `models` adds the tenant model classes of other modules (class -> table)."""
    tree = parse(source)
    known = tenant_models({module: source}) | dict(models or {})
    constants = {
        target.id: _strings(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    found: list[Violation] = []
    for name, function, method in _public_async_functions(tree):
        used = _touches(function, constants, known)
        if used and not _first_parameter_is_context(function, method):
            found.append(
                Violation(
                    module,
                    function.lineno,
                    "org-context-first",
                    f"{name}() uses {', '.join(sorted(used))} without an OrgContext first",
                )
            )
    return found


# --- the checks over the package -------------------------------------------------------------


def _modules() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        out[".".join(p for p in relative.parts if p != "__init__")] = path.read_text()
    return out


def test_no_module_outside_the_resolver_reads_the_organization_from_a_request() -> None:
    sources = _modules()
    bodies = org_body_models(sources)
    found = [
        v
        for name, source in sources.items()
        for v in request_violations(name, source, bodies)
        if not allowed(v)
    ]
    assert not found, "\n".join(map(str, found))


def test_every_allowance_of_rule_a_is_still_needed() -> None:
    sources = _modules()
    bodies = org_body_models(sources)
    raised = {
        (v.module, v.rule) for n, s in sources.items() for v in request_violations(n, s, bodies)
    }
    stale = [key for key in RULE_EXCEPTIONS if key not in raised]
    assert not stale, f"exceptions that no longer match anything: {stale}"
    assert set(CONTEXT_RESOLVERS) <= set(sources), set(CONTEXT_RESOLVERS) - set(sources)


def test_data_access_in_models_takes_an_org_context_first() -> None:
    sources = {n: s for n, s in _modules().items() if n.startswith("blocks.models.")}
    models = tenant_models(sources)
    # The check has something to check: the tables this issue closed are among the tenant ones.
    assert {"ApiKey", "Invite", "DecisionLink", "Run", "Membership"} <= set(models), models
    found = [
        v
        for name, source in sources.items()
        for v in data_access_violations(name, source, models)
        if f"{name}.{v.what.split('(')[0]}" not in PRE_TENANT
    ]
    assert not found, "\n".join(map(str, found))


def test_every_pre_tenant_allowance_is_still_needed() -> None:
    sources = {n: s for n, s in _modules().items() if n.startswith("blocks.models.")}
    models = tenant_models(sources)
    flagged = {
        f"{name}.{v.what.split('(')[0]}"
        for name, source in sources.items()
        for v in data_access_violations(name, source, models)
    }
    stale = sorted(set(PRE_TENANT) - flagged)
    assert not stale, f"allow-listed but taking an OrgContext or touching no tenant table: {stale}"


# --- each check shown to fail on a deliberate violation -------------------------------------

API = "blocks.api.approvals.runs.detail"


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("async def f(request):\n    return request.headers['X-Org-Id']\n", "org-key"),
        ("async def f(request):\n    return request.headers.get('x-blocks-org')\n", "org-key"),
        ("async def f(request):\n    return request.query_params.get('org_id')\n", "org-key"),
        ("async def f(request):\n    return request.path_params['org']\n", "org-key"),
        (
            "async def f(request):\n    form = await request.form()\n    return form['tenant']\n",
            "org-key",
        ),
        (
            "async def f(request):\n    return request.cookies.get('__Host-blocks_session')\n",
            "cookies",
        ),
        ("async def f(request):\n    return request.state.ctx.org_id\n", "resolved-context"),
        (
            "async def f(request):\n    return getattr(request.state, 'ctx', None)\n",
            "resolved-context",
        ),
        ("async def f(request, ctx):\n    request.state.ctx = ctx\n", "resolved-context"),
        (
            "async def f(request):\n    return request.headers['Authorization']\n",
            "credential-header",
        ),
        (
            "@router.get('/v1/runs')\nasync def runs(org_id: uuid.UUID, session: DbSession):\n"
            "    ...\n",
            "org-parameter",
        ),
        (
            "@router.get('/v1/runs')\n"
            "async def runs(org: Annotated[str, Header(alias='X-Organization')]):\n    ...\n",
            "org-parameter",
        ),
        (
            "class StartIn(StrictModel):\n    workflow: str\n    org_id: uuid.UUID\n\n"
            "@router.post('/v1/runs')\nasync def start(body: StartIn, ctx: CanStartRuns):\n"
            "    ...\n",
            "org-parameter",
        ),
    ],
)
def test_rule_a_catches_a_deliberate_violation(source: str, rule: str) -> None:
    found = [v for v in request_violations(API, source) if not allowed(v)]
    assert any(v.rule == rule for v in found), found


def test_rule_a_lets_the_resolver_and_ordinary_reads_pass() -> None:
    # Outside the request edge an org id read from a stored record is no request input...
    record = "def f(row):\n    return row['org_id']\n"
    assert not request_violations("blocks.models.audit.reads", record)
    # ...but the request's own parts are judged everywhere.
    headers = "def f(request):\n    return request.headers['x-org-id']\n"
    assert request_violations("blocks.models.audit.reads", headers)
    cookie = "async def f(request):\n    return request.cookies.get('__Host-blocks_session')\n"
    assert not [v for v in request_violations("blocks.api.deps", cookie) if not allowed(v)]
    ordinary = (
        "async def f(request, ctx: OrgCtx, response):\n"
        "    response.headers['X-Frame-Options'] = 'DENY'\n"
        "    agent = request.headers.get('user-agent')\n"
        "    origin = request.headers.get('origin')\n"
        "    return {'org_id': str(ctx.org_id), 'agent': agent, 'origin': origin}\n"
    )
    assert not request_violations(API, ordinary)
    # A response model may carry the organization id; only request inputs may not.
    out = (
        "class RunOut(StrictModel):\n    org_id: uuid.UUID\n\n"
        "@router.get('/v1/runs/{run_id}', response_model=RunOut)\n"
        "async def get_run(run_id: uuid.UUID, ctx: CanReadRuns) -> RunOut:\n    ...\n"
    )
    assert not request_violations(API, out)
    assert not names_an_org("origin")
    assert not names_an_org("organ")


MODELS = "blocks.models.approvals.widgets"
WIDGET = (
    "class Widget(SQLModel, table=True):\n"
    "    __tablename__ = 'widgets'\n"
    "    id: uuid.UUID = Field(primary_key=True)\n"
    "    org_id: uuid.UUID = Field(sa_column=org_fk_column())\n\n"
)


@pytest.mark.parametrize(
    "body",
    [
        # A model class, without any context.
        "async def all_widgets(session: AsyncSession) -> list[Widget]:\n"
        "    return list((await session.exec(select(Widget))).all())\n",
        # The context is there, but not first (a call site can pass anything in its place).
        "async def widget(session: AsyncSession, ctx: OrgContext, widget_id: uuid.UUID):\n"
        "    return await session.get(Widget, widget_id)\n",
        # Raw SQL naming a tenant table, through a module constant.
        "_COUNT = text('SELECT count(*) FROM widgets')\n\n"
        "async def count_widgets(session: AsyncSession) -> int:\n"
        "    return (await session.exec(_COUNT)).one()[0]\n",
        # Raw SQL naming another module's tenant table (runs) inline.
        "async def purge(session: AsyncSession) -> None:\n"
        "    await session.exec(text('DELETE FROM runs WHERE start_state = :s'))\n",
        # A SQL function of Blocks (each works on tenant rows).
        "async def lock(session: AsyncSession, org: uuid.UUID) -> None:\n"
        "    await session.exec(text('SELECT * FROM blocks_audit_lock_head(:o, :g, :i)'))\n",
        # A public method of a class does data access too.
        "class Widgets:\n"
        "    async def all(self, session: AsyncSession) -> list[Widget]:\n"
        "        return list((await session.exec(select(Widget))).all())\n",
    ],
)
def test_rule_b_catches_a_deliberate_violation(body: str) -> None:
    found = data_access_violations(MODELS, WIDGET + body, {"Run": "runs"})
    assert [v.rule for v in found] == ["org-context-first"], found


def test_rule_b_lets_context_first_and_private_helpers_pass() -> None:
    body = (
        "async def widgets(ctx: OrgContext, session: AsyncSession) -> list[Widget]:\n"
        "    await bind_org(session, ctx.org_id)\n"
        "    return list((await session.exec(select(Widget))).all())\n\n"
        "async def _count(session: AsyncSession) -> int:\n"
        "    return (await session.exec(text('SELECT count(*) FROM widgets'))).one()[0]\n\n"
        "async def find_user(session: AsyncSession, email: str) -> User | None:\n"
        "    return (await session.exec(select(User).where(User.email == email))).first()\n"
    )
    assert not data_access_violations(MODELS, WIDGET + body)
    # A table listed as not organization data is not a tenant table.
    sessions = "class UserSession(SQLModel, table=True):\n    __tablename__ = 'user_sessions'\n"
    assert not tenant_models({MODELS: sessions + "    org_id: uuid.UUID | None = None\n"})
