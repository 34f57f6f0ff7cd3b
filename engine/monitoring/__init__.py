"""Monitoring: worst-of statuses and alerts, API health from the query logs, model
quality from the evaluation store, and the daily map of published outputs.

Runs behind the Monitoring app; reads what the nodes wrote (files and the control store),
never their memory. May import the node packages (to read their layouts) and below; never
``engine.design``.
"""
