"""The real app (services, page, API) served by uvicorn on a free loopback port, for tests over HTTP.

Built by app.py's own `build_app`, so tests exercise the wiring users run; only the command line is
skipped. Several can run at once in one process (each with its own services and port).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipelines.config import AppConfig
from pipelines.services import Services, build_services


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveApp:
    services: Services
    server: object  # ui.server.Server
    url: str

    def close(self) -> None:
        self.server.stop()
        self.services.close()


def start_live_app(models_dir: Path, output_dir: Path, **settings) -> LiveApp:
    from app import build_app
    from ui.server import Server

    cfg = AppConfig(
        models_dir=models_dir,
        output_dir=output_dir,
        device="cpu",
        precision="fp32",
        host="127.0.0.1",
        port=free_port(),
        **settings,
    )
    services = build_services(cfg)
    server = Server(build_app(cfg, services), cfg.host, cfg.port)
    try:
        server.start()
    except BaseException:
        services.close()
        raise
    return LiveApp(services, server, f"http://127.0.0.1:{cfg.port}")


def link_checkpoints(source: Path, target: Path, names: tuple[str, ...]) -> None:
    """Symlink single-file checkpoints (and their .config.json sidecars) from the session models folder."""
    (target / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name in names:
        for suffix in (".safetensors", ".config.json"):
            src = source / "checkpoints" / f"{name}{suffix}"
            if src.exists():
                (target / "checkpoints" / src.name).symlink_to(src)


def write_kohya_lora(path: Path, metadata: dict[str, str], rank: int = 4) -> Path:
    """A small SD1.5 LoRA in kohya's key layout (what CivitAI files use), with training metadata."""
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    tensors = {
        f"{key}.lora_down.weight": torch.zeros(rank, 768),
        f"{key}.lora_up.weight": torch.zeros(32, rank),
        f"{key}.alpha": torch.tensor(float(rank)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path
