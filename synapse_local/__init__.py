"""The local stack: embedded moto, resource bootstrap, schedule runner and event pumps."""
