"""The management API (``tonearm api``): uploads (plain and tus), jobs, assets, takedown, repackage.

Application layer: it calls the job queue (``tonearm.app.jobs``), the key store
(``tonearm.app.apikeys``) and storage; the public origin (``origin/``) never imports it.
"""
