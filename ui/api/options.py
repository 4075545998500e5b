"""A1111's `options`: the few settings Easel has under A1111's names, read and changed through the API.

The default checkpoint lives on the pipeline manager (the page shows and changes the same one); the
others are API-only defaults for requests that do not say (VAE, image format, clip skip, token merging), kept in
memory until the app restarts. Every value is checked before any is applied, so a bad POST changes nothing.
"""

from __future__ import annotations

import threading
from typing import Any

from pipelines import InvalidRequest, ModelRecord, Services, find_vae, normalize_format, own_vae_name
from ui.api.catalog import find_checkpoint, model_title
from ui.api.schemas import Options, OptionsUpdate

# A1111's samples_format names (jpg) <-> ours (jpeg)
A1111_FORMAT = {"png": "png", "jpeg": "jpg", "webp": "webp"}


class ApiOptions:
    def __init__(self, services: Services, samples_format: str = "png", clip_skip: int = 1):
        self._services = services
        self._lock = threading.Lock()
        self._format = normalize_format(samples_format)
        self._clip_skip = clip_skip
        self._vae = "Automatic"
        self._token_merging = 0.0

    @property
    def vae(self) -> str:
        with self._lock:
            return self._vae

    @property
    def output_format(self) -> str:
        with self._lock:
            return self._format

    @property
    def clip_skip(self) -> int:
        with self._lock:
            return self._clip_skip

    @property
    def token_merging(self) -> float:
        with self._lock:
            return self._token_merging

    def current(self) -> Options:
        manager = self._services.manager
        title = sha256 = None
        try:
            record = manager.default_record()
        except Exception:  # no checkpoint installed: the option is empty, as in A1111 without models
            record = None
        if record is not None:
            sha256 = manager.known_hash(record)
            title = model_title(record, sha256)
        with self._lock:
            fmt, clip_skip, vae, merging = self._format, self._clip_skip, self._vae, self._token_merging
        return Options(
            sd_vae=vae,
            sd_model_checkpoint=title,
            sd_checkpoint_hash=sha256,
            samples_format=A1111_FORMAT[fmt],
            CLIP_stop_at_last_layers=clip_skip,
            token_merging_ratio=merging,
            outdir_samples=str(self._services.config.output_dir),
        )

    def update(self, changes: OptionsUpdate) -> None:
        """Apply what was sent; InvalidRequest / ModelNotFound name the option at fault, nothing changes then."""
        sent: dict[str, Any] = {name: getattr(changes, name) for name in changes.model_fields_set}
        record: ModelRecord | None = None
        fmt = None
        if sent.get("sd_model_checkpoint"):
            record = find_checkpoint(self._services.registry, sent["sd_model_checkpoint"])
            if not record.usable:
                raise InvalidRequest(f"{record.name} cannot be used: {record.note}.", field="sd_model_checkpoint")
        if sent.get("samples_format") is not None:
            try:
                fmt = normalize_format(sent["samples_format"])
            except InvalidRequest as exc:
                raise InvalidRequest(str(exc), field="samples_format") from exc
        vae = sent.get("sd_vae")
        if vae is not None:
            vae = vae_option(self._services, vae)
        if record is not None:
            self._services.manager.set_default_model(record.name)
        with self._lock:
            if fmt is not None:
                self._format = fmt
            if vae is not None:
                self._vae = vae
            if sent.get("CLIP_stop_at_last_layers") is not None:
                self._clip_skip = int(sent["CLIP_stop_at_last_layers"])
            if sent.get("token_merging_ratio") is not None:
                self._token_merging = float(sent["token_merging_ratio"])


def vae_option(services: Services, text: str) -> str:
    """An sd_vae value checked: "Automatic" for the checkpoint's own (A1111's "None" too), else an installed VAE."""
    name = own_vae_name(text)
    if name is None:
        return "Automatic"
    try:
        find_vae(services.registry, name)
    except InvalidRequest as exc:
        raise InvalidRequest(str(exc), field="sd_vae") from exc
    return name
