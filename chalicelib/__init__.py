"""SynapseNet Serverless: A/B testing, training-data versioning and explainability on AWS."""
