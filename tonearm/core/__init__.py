"""The core every stage stands on: plain types (``model``), the error root (``errors``), the codec
and layout tables (``codecs``, ``layouts``), configuration types (``config``), the ffmpeg runner
(``ffmpeg``), storage (``storage``, ``s3storage``) and the catalog (``catalog``).

Imports nothing of the stages or the application.
"""
