"""Core: settings (declared once), the home layout, user-facing errors, checksummed
artifacts, YAML text helpers and the gazetteer that names places on maps.

Runs in every process. Imports nothing else of ``engine``.
"""
