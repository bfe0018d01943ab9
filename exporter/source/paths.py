"""Blob paths of an export: the model.json file name and how paths are joined and shown in messages."""
from __future__ import annotations

from azure.storage.blob import ContainerClient

MODEL_FILE = "model.json"


def join_path(*parts: str) -> str:
    """Join blob path parts with "/", leaving out empty ones (an export may sit at the container root)."""
    return "/".join(p for p in parts if p)


def model_display_path(container_client: ContainerClient, path: str) -> str:
    """``<container>/<path>/model.json``: how messages name the model.json they are about."""
    return f"{container_client.container_name}/{join_path(path, MODEL_FILE)}"


def model_folder(name: str) -> str | None:
    """The folder of ``name`` when it names a model.json ("" at the container root), else None."""
    if name == MODEL_FILE or name.endswith("/" + MODEL_FILE):
        return name[: -len(MODEL_FILE)].rstrip("/")
    return None
