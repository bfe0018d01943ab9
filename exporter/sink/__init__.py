"""The sending side of a run: batching, the bulk sink and the events it reports."""
from .batching import MAX_BATCH_BYTES, Batch, Batcher
from .bulk_sink import BulkSink, PollTiming
from .events import BatchAccepted, BatchConfirmed, BatchNotConfirmed, ContactRejected, SentBatch, SinkEvent
from .window import InFlightWindow

__all__ = [
    "MAX_BATCH_BYTES", "Batch", "BatchAccepted", "BatchConfirmed", "BatchNotConfirmed", "Batcher", "BulkSink",
    "ContactRejected", "InFlightWindow", "PollTiming", "SentBatch", "SinkEvent",
]
