"""Model resolution, the complexity classifier and routers, balancing, retries, breakers and
fallbacks. No web framework, no HTTP client."""
