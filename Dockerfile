# Production image for Blocks. One image for every role: the default command serves the API;
# `blocks worker` and `blocks migrate` run the other two (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BLOCKS_API_HOST=0.0.0.0

WORKDIR /app

# A wheel install (not editable): the migrations ship inside the package as blocks/_migrations.
COPY pyproject.toml README.md alembic.ini ./
COPY blocks/ blocks/
COPY migrations/ migrations/
RUN pip install . \
    && useradd --create-home --uid 10001 --user-group blocks

USER blocks
EXPOSE 8000

CMD ["blocks", "api"]
