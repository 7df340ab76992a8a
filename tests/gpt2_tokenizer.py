"""The real GPT-2 tokenizer for tests, built offline from the BPE ranks shipped in openai-whisper's sdist.

The model hub is unreachable on CI, but PyPI is not: openai-whisper's source archive carries
``whisper/assets/gpt2.tiktoken`` (GPT-2's 50,256 byte-level BPE ranks). It is fetched once with
pip (never installed), converted with transformers' TikTokenConverter and cached as a
tokenizer folder under ``${SPD_BENCH_TEST_CACHE:-~/.cache/spd-bench-tests}/gpt2-tokenizer``.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

WHISPER = "openai-whisper==20250625"
RANKS_MEMBER = "whisper/assets/gpt2.tiktoken"
# GPT-2's pre-tokenizer regex, as whisper/tokenizer.py passes it to tiktoken.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
END_OF_TEXT = "<|endoftext|>"


def cache_dir() -> Path:
    root = os.environ.get("SPD_BENCH_TEST_CACHE") or "~/.cache/spd-bench-tests"
    return Path(root).expanduser() / "gpt2-tokenizer"


class _RanksFileConverter(TikTokenConverter):
    """TikTokenConverter that reads the ranks file itself, so the ``tiktoken`` package is not needed."""

    @staticmethod
    def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
        ranks: dict[bytes, int] = {}
        for line in Path(tiktoken_url).read_text().splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
        return ranks


def _fetch_ranks(workdir: Path) -> Path:
    """Download whisper's source archive with pip and extract the GPT-2 ranks file from it."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", WHISPER, "-d", str(workdir)],
        check=True,
    )
    archives = list(workdir.glob("openai_whisper-*.tar.gz"))
    if len(archives) != 1:
        raise RuntimeError(f"expected one openai-whisper sdist in {workdir}, pip left {os.listdir(workdir)}")
    with tarfile.open(archives[0]) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("/" + RANKS_MEMBER))
        source = archive.extractfile(member)
        assert source is not None
        target = workdir / "gpt2.tiktoken"
        target.write_bytes(source.read())
    return target


def _build(target: Path) -> None:
    """Convert the ranks into a tokenizer folder, written beside ``target`` and renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        work = Path(tmp)
        ranks = _fetch_ranks(work)
        backend = _RanksFileConverter(vocab_file=str(ranks), pattern=GPT2_PATTERN, extra_special_tokens=[END_OF_TEXT])
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend.converted(), bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, unk_token=END_OF_TEXT
        )
        folder = work / "tokenizer"
        tokenizer.save_pretrained(folder)
        try:
            folder.rename(target)
        except OSError:
            # Another test process finished first; its folder is equivalent.
            if not (target / "tokenizer.json").exists():
                raise


def load_gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2's tokenizer (same ids as the hub's ``gpt2``), built on first use and cached."""
    target = cache_dir()
    if not (target / "tokenizer.json").exists():
        if target.exists():
            shutil.rmtree(target)
        _build(target)
    return PreTrainedTokenizerFast.from_pretrained(str(target))
