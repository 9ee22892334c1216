# Production image for Blocks. One image for every role: the default command serves the API;
# `blocks worker` and `blocks migrate` run the other two (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BLOCKS_API_HOST=0.0.0.0

WORKDIR /app

# xmlsec1 checks SAML signatures (pysaml2 runs it): single sign-on through a SAML provider.
RUN apt-get update \
    && apt-get install -y --no-install-recommends xmlsec1 \
    && rm -rf /var/lib/apt/lists/*

# The locked dependencies first, each checked against its hash (`make lock` writes the file),
# then Blocks itself without resolving anything again.
COPY requirements.txt ./
RUN pip install --require-hashes -r requirements.txt

# A wheel install (not editable): the migrations ship inside the package as blocks/_migrations.
COPY pyproject.toml README.md alembic.ini ./
COPY blocks/ blocks/
COPY migrations/ migrations/
# The example workflows, installed the way an author's package is; an image of your own adds
# your package the same way (`FROM` this one, `pip install --no-deps ./your-package`).
COPY examples/ examples/
RUN pip install --no-deps . ./examples \
    && useradd --create-home --uid 10001 --user-group blocks

USER blocks
EXPOSE 8000

CMD ["blocks", "api"]
