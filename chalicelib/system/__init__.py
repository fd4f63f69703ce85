"""Public system routes: health and the OpenAPI document."""
