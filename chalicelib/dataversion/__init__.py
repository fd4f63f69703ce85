"""Training-data versioning: content-addressed dataset versions with schemas, lineage,
transformations, reconstruction and S3-triggered ingest.

Importing this package is cheap (no boto3, no pandas); the public names live in their modules:
:class:`~chalicelib.dataversion.versioning.DatasetVersioningEngine`,
:class:`~chalicelib.dataversion.lineage.LineageGraph`,
:class:`~chalicelib.dataversion.reconstruction.DatasetReconstructor`,
:func:`~chalicelib.dataversion.schema.validate_schema_evolution`.
"""
