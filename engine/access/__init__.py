"""Access: who may do what. Local accounts and sign-in sessions (``accounts``), groups
and rights per project, infrastructure, stage and API service (``rights``), and the audit
trail of the people who changed something (``audit``).

Runs in every process that changes state: the engine checks rights where state changes,
pages only reflect them. May import ``engine.storage`` and ``engine.core`` only.
"""
