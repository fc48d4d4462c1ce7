# crmwatch: one image for `serve`, `worker` and `migrate`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY integrations ./integrations
COPY migrations ./migrations
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CRMWATCH_DATABASE_URL=sqlite+aiosqlite:////data/crmwatch.db \
    CRMWATCH_SECRET_KEY_FILE=/data/crmwatch.secret
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /data --create-home crmwatch
USER crmwatch
WORKDIR /data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
CMD ["crmwatch", "serve", "--host", "0.0.0.0", "--port", "8000"]
