"""Model resolution, balancing and (later) classification. No web framework, no HTTP client."""
