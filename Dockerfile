# The aggregator service, the publisher and the harness share this image.
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY harness ./harness
COPY experiments ./experiments
RUN pip install --no-cache-dir -c constraints.txt . && mkdir -p /app/results && chown app /app/results

USER app
EXPOSE 8080
CMD ["python", "-m", "harness", "serve", "--host", "0.0.0.0", "--port", "8080"]
