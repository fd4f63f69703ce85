"""Model registry: safe model artifacts in S3, numbered versions and stages."""
