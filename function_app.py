"""Azure Functions app (Python v2 programming model): the triggers, each handing over to exporter.functions.

Nothing here reads settings or storage at import: a bad setting fails one request or run with a message
naming it, and never stops the host from finding these functions.
"""
import azure.functions as func

from exporter.functions import arrival, http_api, queue_worker, schedule
from exporter.memory import tune_process
from exporter.settings import RUN_QUEUE

tune_process()  # allocator and GC settings, once per worker process, before any run starts threads
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="exports", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_exports(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.list_exports(req)


@app.route(route="exports/runs", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def start_all_export_runs(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.start_all_runs(req)


@app.route(route="exports/{name}/runs", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def start_export_run(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.start_run(req)


@app.route(route="exports/{name}/runs/{runId}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_export_run(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.get_run(req)


@app.timer_trigger(arg_name="timer", schedule="%EXPORT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def scheduled_exports(timer: func.TimerRequest) -> None:
    schedule.run_schedule(timer)


@app.queue_trigger(arg_name="msg", queue_name=RUN_QUEUE, connection="AzureWebJobsStorage")
def run_queued_export(msg: func.QueueMessage) -> None:
    queue_worker.process_run(msg)


@app.queue_trigger(arg_name="msg", queue_name=queue_worker.POISON_QUEUE, connection="AzureWebJobsStorage")
def record_failed_export_run(msg: func.QueueMessage) -> None:
    queue_worker.record_poison(msg)


@app.blob_trigger(arg_name="blob", path="%CI_EXPORT_CONTAINER%/{name}", connection="CI_EXPORT_STORAGE",
                  source=func.BlobSource.EVENT_GRID)
def export_on_arrival(blob: func.InputStream) -> None:
    arrival.handle_arrival(blob)
