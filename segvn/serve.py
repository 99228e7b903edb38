"""Serve a model to Label Studio: ``python -m segvn.serve ckpt_path=PATH [host=127.0.0.1] [port=9090]``.

A Label Studio ML backend (:mod:`segvn.serving.app`) on uvicorn: connect it in the project's settings
(Model > Connect model, the URL ``http://host:port``). The model is loaded once, before the server
listens: a missing or broken checkpoint ends in one error line and exit status 1.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from segvn.cli import command
from segvn.errors import ConfigError
from segvn.serving.app import ServeSettings, create_app
from segvn.serving.finetune import FinetuneSettings
from segvn.serving.sources import ImageSources

log = logging.getLogger("segvn.serve")


def settings_of(cfg: DictConfig) -> ServeSettings:
    """The server's settings from the composed config; ``ConfigError`` naming a setting that cannot work."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or cfg.ckpt_path in (None, ""):
        raise ConfigError("ckpt_path=PATH is required: the checkpoint (.ckpt) or exported model to serve")
    if not 0 <= int(cfg.port) <= 65535:
        raise ConfigError(f"port={cfg.port}: give a TCP port, 1 to 65535 (9090 by default)")
    for key in ("max_pixels", "max_bytes", "max_request_bytes", "batch_size"):
        if int(cfg[key]) < 1:
            raise ConfigError(f"{key}={cfg[key]}: give a positive number")
    if cfg.token is not None and not str(cfg.token):
        raise ConfigError("token='': give a token, or token=null for no authentication")
    image_size = cfg.image_size
    if image_size is not None and not isinstance(image_size, str):
        image_size = [int(v) for v in image_size]
    finetune = FinetuneSettings(
        enabled=bool(cfg.finetune.enabled),
        workdir=str(cfg.finetune.workdir),
        street=str(cfg.finetune.street),
        overrides=[str(o) for o in cfg.finetune.overrides or []],
        timeout_s=float(cfg.finetune.timeout_s),
        init_from_served=bool(cfg.finetune.init_from_served),
    )
    sources = ImageSources(
        roots=[str(r) for r in cfg.roots or []],
        upload_dir=cfg.upload_dir,
        label_studio_url=cfg.label_studio_url,
        label_studio_token=cfg.label_studio_token,
        allowed_hosts=[str(h) for h in cfg.allowed_hosts or []],
        max_pixels=int(cfg.max_pixels),
        max_bytes=int(cfg.max_bytes),
        timeout_s=float(cfg.fetch_timeout_s),
    )
    return ServeSettings(
        ckpt_path=str(cfg.ckpt_path),
        device=str(cfg.device),
        runtime=str(cfg.runtime),
        image_size=image_size,
        batch_size=int(cfg.batch_size),
        token=None if cfg.token is None else str(cfg.token),
        max_request_bytes=int(cfg.max_request_bytes),
        sources=sources,
        finetune=finetune,
    )


def serve(cfg: DictConfig) -> None:
    """Load the model, then serve until stopped (Ctrl+C)."""
    import uvicorn

    settings = settings_of(cfg)
    app = create_app(settings)
    backend = app.state.backend
    log.info(
        "serving %s (model_version %s, %s on %s) at http://%s:%s%s",
        settings.ckpt_path, backend.version, backend.model.runtime, backend.model.device, cfg.host, cfg.port,
        "" if settings.token else " without a token",
    )  # fmt: skip
    uvicorn.run(app, host=str(cfg.host), port=int(cfg.port), log_level=str(cfg.log_level))


main = command("serve")(serve)

if __name__ == "__main__":
    main()
