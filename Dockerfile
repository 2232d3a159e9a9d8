# llmctl's image: the gateway a kubernetes target runs in front of its models (providers/kubernetes/gateway.py).
# Build and push it with the tag in providers/pulumi_support/images.py before a first apply to a cluster:
#   docker build -t ghcr.io/llmctl/llmctl:0.1.0 . && docker push ghcr.io/llmctl/llmctl:0.1.0
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY llmctl ./llmctl
COPY providers ./providers
RUN pip install --no-cache-dir . && useradd --uid 10001 llmctl && mkdir -p /var/lib/llmctl \
    && chown llmctl /var/lib/llmctl
USER 10001
EXPOSE 8080
CMD ["python", "-m", "llmctl.gateway", "--spec", "/etc/llmctl/spec.json", "--host", "0.0.0.0", "--port", "8080"]
