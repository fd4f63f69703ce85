"""Deployment tooling: packaging (``python -m infra.package``), the merged CloudFormation/SAM
template, artifact size checks and the deploy script. Nothing here runs inside Lambda.
"""
