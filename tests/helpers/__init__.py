"""Public builders shared by test modules.

A test module takes what it shares with others from here or from a conftest fixture, never a
name of another test module (``tests/unit/test_architecture.py`` checks the imports).
"""
