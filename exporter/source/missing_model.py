"""The error for a path without model.json: which folders in the container do hold one, nearest first."""
from __future__ import annotations

import difflib

from azure.storage.blob import ContainerClient

from ..errors import SourceError
from .paths import MODEL_FILE, model_display_path, model_folder

_MODEL_SCAN_LIMIT = 20_000  # blobs listed at most when looking for model.json files to suggest


def model_missing(container_client: ContainerClient, path: str) -> SourceError:
    """No model.json at ``path``: suggest folders that have one, and recognise the old flat CSV layout."""
    found, legacy = _nearby_models(container_client, path)
    message = f"no {MODEL_FILE} at {model_display_path(container_client, path)}; check source.path"
    if found:
        listed = "\n".join(f"  - {folder}" for folder in found)
        message += f". Folders in container {container_client.container_name!r} that hold {MODEL_FILE}:\n{listed}"
    else:
        message += (
            f". No {MODEL_FILE} exists anywhere in container {container_client.container_name!r}: "
            "has the export run in Customer Insights yet?"
        )
    if legacy:
        message += (
            f"\n{path}/ holds {len(legacy)} CSV files with the old flat naming (e.g. {legacy[0]}); "
            "that layout has no model.json and is not supported: re-run the export with a current Customer Insights "
            "instance so that it writes model.json"
        )
    return SourceError(message)


def _nearby_models(container_client: ContainerClient, path: str) -> tuple[list[str], list[str]]:
    """Folders that hold model.json, most similar to ``path`` first; and CSV files directly in ``path``."""
    first = path.split("/", 1)[0]
    folders = _folders_with_model(container_client, first + "/" if "/" in path else None)
    if not folders and "/" in path:
        folders = _folders_with_model(container_client, None)
    folders.sort(key=lambda f: (-difflib.SequenceMatcher(None, f, path).ratio(), f))
    legacy = [
        blob.name.rsplit("/", 1)[-1]
        for blob in container_client.walk_blobs(name_starts_with=path + "/", delimiter="/")
        if blob.name.lower().endswith(".csv")
    ][:50]
    return folders[:10], legacy


def _folders_with_model(container_client: ContainerClient, prefix: str | None) -> list[str]:
    folders = []
    for count, blob in enumerate(container_client.list_blobs(name_starts_with=prefix)):
        if count >= _MODEL_SCAN_LIMIT:
            break
        folder = model_folder(blob.name)
        if folder is not None:
            folders.append(folder or "(container root)")
    return folders
