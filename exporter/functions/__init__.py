"""What the function app's triggers do. function_app.py only declares the triggers and calls these.

- ``http_api``: POST exports/{name}/runs, POST exports/runs, GET exports/{name}/runs/{runId}, GET exports.
- ``schedule``: the timer; ``arrival``: a new model.json; ``queue_worker``: the run queue and its poison queue.
- ``admission``: queue a run unless the export has one queued or running; ``run_markers``: the blob that
  makes this atomic.
- ``messages``: the JSON read from the queue and from start requests; ``clients``: the settings and storage
  clients an invocation uses; ``log_setup``: scrubbed logging.

Every way of starting a run (HTTP, timer, a new model.json) saves a ``queued`` run report and puts a message on
the ``export-runs`` queue; the queue handler does the run (about 40 minutes for 1M contacts). One run per export
at a time: a marker blob per export (``exporter-state/<export>/run-marker.json``, replaced with ETag conditions)
names the newest queued run, so two starts cannot both queue, and ``run_export`` holds a blob lease while it runs.

Settings and the exports config are read inside each handler, never at import, so a bad setting fails one request
or run with a message naming it instead of hiding every function.
"""
