"""The API's reference: the OpenAPI document's contract and the page that shows it.

`openapi` completes every operation (errors as problem+json, examples, permission, security) when
the document is generated; `examples` holds the example values the models carry and
`openapi_examples` those of bodies that are not models; `docs` serves Swagger UI at /docs from the
installed fastapi-offline files, started by `static/docs-init.js`, under the site's CSP.

May use: the shared modules at `blocks.api`'s top (deps for the permission each route needs).
"""
