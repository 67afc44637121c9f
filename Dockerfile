# One image for the API and the worker; docker-compose.yml chooses the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY api ./api
COPY tools ./tools
RUN pip install --no-cache-dir . && useradd --system --uid 10001 fhirpatch
USER fhirpatch
EXPOSE 8080
CMD ["python", "-m", "uvicorn", "--factory", "api.app:app_from_env", "--host", "0.0.0.0", "--port", "8080"]
