"""AppConfig: every setting the app has, in one frozen object.

Only app.py reads the command line and the environment; it builds this object once and hands it to
the services. Each field carries a description (shown by `--help` and checked against the README by a
test), so a setting cannot exist without being documented.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def setting(default, help: str, cli_type: type | None = None):  # noqa: A002 - "help" mirrors argparse
    """A config field with its description; cli_type is needed only where the default is None."""
    return field(default=default, metadata={"help": help, "type": cli_type or type(default)})


@dataclass(frozen=True)
class AppConfig:
    models_dir: Path = setting(
        REPO_ROOT / "models",
        "Folder with checkpoints/, loras/, vae/, embeddings/ (an A1111 or ComfyUI models folder works too).",
    )
    output_dir: Path = setting(Path("outputs"), "Where images and the history index are written.")
    styles_dir: Path = setting(
        REPO_ROOT / "styles",
        "Folder of style presets: our YAML files, Fooocus JSON style files and A1111 styles.csv files are all read.",
    )
    wildcards_dir: Path = setting(
        REPO_ROOT / "wildcards",
        "Folder of wildcard files: __name__ in a prompt picks a line of name.txt (sub-folders: __folder/name__).",
    )
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps.")
    precision: str = setting("auto", "auto, fp32, fp16 or bf16 (auto: bf16 on CUDA and on CPUs with native bf16).")
    default_model: str | None = setting(
        None,
        "Checkpoint used when a request names none: a file name in models/checkpoints or a hub id "
        "(default: the first checkpoint found).",
        str,
    )
    hub_model: str = setting(
        "stabilityai/sdxl-turbo",
        "Hub id offered for download when no checkpoint is installed.",
    )
    cache_budget_gb: float | None = setting(
        None,
        "Memory for loaded models, in GiB (default: 60% of RAM on CPU, of GPU memory on CUDA).",
        float,
    )
    lora_cache_mb: float = setting(
        1024.0, "Memory for LoRA files kept after use, in MiB, so switching back to one does not read it again."
    )
    max_queue: int = setting(100, "Most jobs waiting at once; more are refused with a clear message.")
    max_input_megapixels: float = setting(
        16.0,
        "Largest input image accepted (Input Image, img2img, extras), in megapixels; larger ones are refused with a "
        "message, before they are decoded.",
    )
    host: str = setting("127.0.0.1", "Address to serve on (--listen sets 0.0.0.0).")
    port: int = setting(7865, "Port to serve on.")
    share: bool = setting(False, "Ask Gradio for a public share link.")
    api: bool = setting(
        True,
        "Serve the AUTOMATIC1111-compatible HTTP API under /sdapi/v1 (docs at /docs), on the same queue as the "
        "page; on by default, --no-api turns it off.",
    )
    api_auth: str | None = setting(
        None,
        "Protect the /sdapi/v1 API with HTTP Basic: user:password, several separated by commas (the page and /docs stay open).",
        str,
    )
    previews: str = setting(
        "auto",
        "Live previews while an image denoises: auto (the tiny TAESD decoder when one is in models/vae_approx, "
        "else a fast colour approximation), approx, or off.",
    )
    compile: bool = setting(
        False,
        "On a CPU, compile the UNet (torch.compile): the first images on a machine are made uncompiled while it "
        "compiles in the background (minutes, once); later starts load it from the cache folder. Off by default: "
        "with the weights left as graph inputs (so LoRAs patch them in place) it measured no faster than the "
        "eager UNet (bench/cpu_full_size.py).",
    )
    reuse_memory: bool = setting(
        True,
        "On a CPU, keep memory freed by one step for the next (glibc malloc settings) instead of handing it back "
        "to the system and faulting it in again: an image measured 0.80-0.96x the time, images unchanged. The "
        "process keeps the peak it reached until a model is unloaded; --no-reuse-memory turns it off.",
    )
    cache_dir: Path | None = setting(
        None, "Folder for derived files (materialized configs, hashes); default output_dir/.cache.", Path
    )
    preset: str = setting(
        "default",
        "Preset to start the page with: a file name from presets/ without .yaml (default, realistic, anime, "
        "lightning, ...). It sets model, performance, styles, guidance, sampler and size.",
    )
    auth: str | None = setting(
        None,
        "Ask for a login before showing the page: user:password, or several as user1:pw1,user2:pw2.",
        str,
    )
    auth_file: Path | None = setting(
        None,
        "Ask for a login listed in this file: one user:password per line (commas also separate entries; "
        "lines starting with # are ignored). Combines with --auth.",
        Path,
    )

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.output_dir / ".cache"

    def replace(self, **changes) -> AppConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Field name -> help text, for --help and the docs test."""
        return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}
