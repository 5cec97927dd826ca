# One image for every role: `deployer serve`, `deployer worker`, `deployer sandbox`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md settings.py ./
COPY graphql_api graphql_api
COPY jobs jobs
COPY models models
COPY clients clients
COPY sandbox sandbox
COPY deployer deployer
RUN pip install --no-cache-dir . && useradd --create-home deployer
USER deployer
EXPOSE 8000
CMD ["deployer", "serve", "--host", "0.0.0.0", "--port", "8000"]
