"""The application: the pipeline assembled from the stages (``pipeline``), batch runs over worker
processes (``batch``), the ``tonearm`` command (``cli``) and the demo master (``demo``)."""
