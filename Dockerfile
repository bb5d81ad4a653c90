# The services' image for compose.yaml. nats-server and PostgreSQL run in their own containers.
FROM python:3.12-slim
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY events events
COPY services services
COPY projections projections
COPY bench bench
RUN uv sync --locked --no-dev && ln -s /app/.venv/bin/milestones /usr/local/bin/milestones
USER nobody
ENTRYPOINT ["milestones"]
