"""The worked example, apart from the platform: the synthetic card-fraud generator
(``datagen``), ``make demo``'s orchestration (``demo``) and their commands (``nodal data
generate``, ``nodal demo``, registered through the ``nodal.commands`` entry point).

May import ``engine``; nothing in ``engine`` or ``apps`` imports it. The example project's
definitions are ``examples/fraud/``.
"""
