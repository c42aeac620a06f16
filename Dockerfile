# The agent-runner service image (docker-compose.agent-runner.yml). No registry is used:
#
# * BASE_IMAGE is the Debian bookworm rootfs that `agent-runner sandbox build` imports from
#   Debian packages and tags `agent-runner-base:latest` (its libc, libssl, ca-certificates
#   and curl are what the binary and the health check need);
# * BINARY is an agent-runner binary built on a host with glibc 2.36 or older (Debian
#   bookworm, Ubuntu 22.04), e.g. by `cargo build --release`; nothing is compiled in here.
#
#   docker build --build-arg BINARY=target/release/agent-runner -t agent-runner:local .
#
# The binary is copied last, so a rebuild after `cargo build` redoes only that step.
ARG BASE_IMAGE=agent-runner-base:latest
FROM ${BASE_IMAGE}

# The runner's own unprivileged user 10000 (the sandboxes' user is 10001). Its home is the
# state directory: journal, transcripts, clone caches and work trees.
RUN groupadd --gid 10000 runner \
 && useradd --uid 10000 --gid 10000 --no-create-home \
      --home-dir /var/lib/agent-runner --shell /usr/sbin/nologin runner \
 && mkdir -p /var/lib/agent-runner \
 && chown 10000:10000 /var/lib/agent-runner \
 && chmod 0700 /var/lib/agent-runner

# The recorded model reply of the quick-start example: LLM_PROVIDER=replay with
# LLM_REPLAY_FILE set to this file runs the example task without a model server.
COPY examples/calculator/fix.jsonl /usr/local/share/agent-runner/examples/calculator/fix.jsonl

ENV HOME=/var/lib/agent-runner \
    AGENT_RUNNER_STATE_DIR=/var/lib/agent-runner \
    AGENT_RUNNER_LISTEN=0.0.0.0:8080
WORKDIR /var/lib/agent-runner
VOLUME /var/lib/agent-runner
EXPOSE 8080
# The health check is in the compose file: `curl -fsS http://127.0.0.1:8080/healthz`.
USER 10000:10000
ENTRYPOINT ["agent-runner"]
CMD ["serve"]

ARG BINARY=target/release/agent-runner
COPY ${BINARY} /usr/local/bin/agent-runner
