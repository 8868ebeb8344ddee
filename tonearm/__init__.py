"""tonearm: adaptive-bitrate audio pipeline and HLS/DASH origin.

Three layers, checked by import-linter (``.importlinter``, run in ``make test``):

* ``tonearm.app``: the application on top: pipeline assembly, batch runs, the CLI.
* the stages ``ingest``, ``transcode``, ``packager``, ``manifests``, ``origin``: each imports only
  the core, never another stage and never the application.
* ``tonearm.core``: plain types, the error root, the codec and layout tables, configuration,
  the ffmpeg runner, storage and the catalog.
"""

__version__ = "0.1.0"
