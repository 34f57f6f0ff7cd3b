"""The base of every error a user can act on.

Engine functions raise a subclass (``ProjectError``, ``BundleError``, ``DeployerError`` …)
with a message written for the user; entry points (CLI, pages, routes) show the message,
never a traceback. Anything else is a bug.
"""


class NodalError(Exception):
    """An expected failure caused by input or state; the message says what and why."""
