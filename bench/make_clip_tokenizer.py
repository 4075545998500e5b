"""Derive the CLIP BPE tokenizer files shipped in `pipelines/model_configs/tokenizer/`.

Why this exists: SD1.x and SDXL checkpoints carry no tokenizer, and the app must load them with no
network. The vocabulary openai/clip-vit-large-patch14 uses (49408 tokens) is the same one OpenAI's
`SimpleTokenizer` builds from the BPE merge list `bpe_simple_vocab_16e6.txt.gz`, which open_clip ships in
its package folder. This script repeats that derivation and writes the Hugging Face style `vocab.json` and
`merges.txt`, so the app needs neither open_clip nor the hub at run time.

Run: `python bench/make_clip_tokenizer.py [--gz PATH] [--out DIR]`. Tests import `derive_clip_bpe` to check
that the shipped files still match the derivation.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
from pathlib import Path

VOCAB_SIZE = 49408
# CLIP keeps the first 49152 - 256 - 2 merges so that 256 bytes + 256 `</w>` bytes + merges + 2 specials
# = 49408 tokens.
N_MERGES = 49152 - 256 - 2
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "pipelines" / "model_configs" / "tokenizer"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable unicode table; its order fixes the first 256 ids."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def derive_clip_bpe(gz_bytes: bytes) -> tuple[dict[str, int], list[str]]:
    """Return (vocab token->id, merges as "a b" strings) exactly as CLIP's SimpleTokenizer builds them."""
    lines = gzip.decompress(gz_bytes).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]  # line 0 is a version header
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError("unexpected BPE merge file: wrong number or shape of merges")
    tokens = list(bytes_to_unicode().values())
    tokens = tokens + [t + "</w>" for t in tokens]
    tokens.extend("".join(m) for m in merges)
    tokens.extend(SPECIAL_TOKENS)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"derived vocabulary has {len(vocab)} tokens, expected {VOCAB_SIZE}")
    return vocab, [" ".join(m) for m in merges]


def open_clip_gz_path() -> Path | None:
    """Where open_clip's merge list lies, found without importing open_clip (it needs torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "bpe_simple_vocab_16e6.txt.gz"
        if path.is_file():
            return path
    return None


def write_tokenizer_files(vocab: dict[str, int], merges: list[str], out_dir: Path) -> None:
    """Write `vocab.json` and `merges.txt` in the layout Hugging Face's CLIP tokenizer repos use."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gz", type=Path, default=None, help="bpe_simple_vocab_16e6.txt.gz (default: open_clip's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    gz = args.gz or open_clip_gz_path()
    if gz is None:
        raise SystemExit("open_clip's bpe_simple_vocab_16e6.txt.gz not found; pass --gz")
    vocab, merges = derive_clip_bpe(gz.read_bytes())
    write_tokenizer_files(vocab, merges, args.out)
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}")


if __name__ == "__main__":
    main()
