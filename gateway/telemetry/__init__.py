"""What the gateway tells operators: OpenTelemetry traces (OTLP), Prometheus metrics, deployment health."""
