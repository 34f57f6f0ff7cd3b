"""The ``nodal`` sub-commands, one module per area; each has ``register(subparsers)``."""
