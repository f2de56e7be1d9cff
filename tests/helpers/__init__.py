"""What the tests share: processes on loopback (the gateway, fake upstreams, Redis, an OTLP
receiver), polling for what another process does, and assertions on OpenAI-shaped errors."""
