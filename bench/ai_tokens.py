"""Prompt tokens per item of the AI stage at the seed's scale, and what the shown candidates keep.

    python bench/ai_tokens.py [--items 21737] [--catalog 50000] [--seed 11] [--shape chunk|item]
                              [--abt /work/shared/datasets/abt_buy]

Two measurements, each against its target (exits non-zero when one is missed):

* **tokens**: the generated sample (``matching_pipeline.sample.generator``, as bench/speed_pipeline.py
  makes it) goes through the enhanced stage; the items it leaves unmatched go through the AI stage
  logic (``AIStage.decide``, block by block as the asset runs them, the real ``openai`` client)
  against the local OpenAI-compatible server of tests/servers/openai_server.py. Prompt tokens per
  item are the server's usage figures: characters / 4 of the messages and the response schema,
  the estimate the issue's 670 tokens per item was measured with (target <= 350). When the
  ``bpe-openai`` package is installed (``pip install bpe-openai``: a tiktoken-compatible tokenizer
  whose o200k and cl100k tables are compiled in, so it needs no download at run time), the same
  requests are also counted with ``o200k_base`` (gpt-4o's encoding): message contents plus the
  chat format's few tokens per message, plus the schema's JSON, since providers do not publish
  how they count a response schema.
* **recall**: Abt-Buy (items Buy.csv, catalog Abt.csv, loaded as bench/quality_abt_buy.py does)
  through the enhanced stage; for the items it leaves unmatched, the share whose true entry is
  among the candidates the AI stage would show (``shown_candidates``: at most ``top_k`` within
  the score band), next to the share among the first ``top_k`` (target >= 0.97).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from matching_pipeline.clients.openai_chat import ChatSession  # noqa: E402
from matching_pipeline.core.catalog import CatalogIndex, IndexSettings  # noqa: E402
from matching_pipeline.core.enhanced import match_enhanced  # noqa: E402
from matching_pipeline.core.llm import PROMPT_VERSION, shown_candidates  # noqa: E402
from matching_pipeline.core.models import Decision  # noqa: E402
from matching_pipeline.defs.assets.ai import AIStage  # noqa: E402
from matching_pipeline.defs.openai_resource import OpenAIResource  # noqa: E402
from matching_pipeline.defs.stages import STAGE_SPECS  # noqa: E402
from matching_pipeline.results.store import CHUNK_SIZE, ResultsDatabase  # noqa: E402
from tests.servers.openai_server import FakeOpenAI  # noqa: E402

TARGET_PROMPT_TOKENS_PER_ITEM = 350
TARGET_SHOWN_RECALL = 0.97
MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens the chat format adds per message (role and separators), plus 3 to prime the reply:
OpenAI's published counting recipe for gpt-4o-class models."""


def o200k_counter() -> Callable[[Mapping[str, Any]], int] | None:
    """Counts a request body's prompt tokens with o200k_base, or None without ``bpe-openai``."""
    try:
        import bpe_openai
    except ImportError:
        return None
    encoding = bpe_openai.get_encoding("o200k_base")

    def count(body: Mapping[str, Any]) -> int:
        messages = sum(len(encoding.encode(m["content"])) + MESSAGE_OVERHEAD_TOKENS for m in body["messages"]) + 3
        return messages + len(encoding.encode(json.dumps(body["response_format"]["json_schema"]["schema"])))

    return count


def leftovers(items: pd.DataFrame, decisions: Sequence[Decision]) -> tuple[pd.DataFrame, dict[str, Decision]]:
    """The pending frame the AI stage gets (with chunk keys in arrival order) and its decisions."""
    frame = items.assign(chunk_key=[f"b000001:bench:{i // CHUNK_SIZE + 1:05d}" for i in range(len(items))])
    unmatched = {d.item_id: d for d in decisions if not d.matched}
    return frame[frame["item_id"].isin(unmatched)].reset_index(drop=True), unmatched


def measure_tokens(args: argparse.Namespace, work: Path) -> dict[str, float]:
    from matching_pipeline.core.readers import CATALOG, ITEMS, read_table
    from matching_pipeline.sample.generator import write_sample

    paths = write_sample(work / "sample", n_catalog=args.catalog, n_items=args.items, seed=args.seed)
    catalog, items = read_table(paths["catalog"], CATALOG), read_table(paths["items"], ITEMS)
    index = CatalogIndex.build(catalog, IndexSettings(), version="bench")
    block = STAGE_SPECS["enhanced"].chunks_per_block * CHUNK_SIZE
    decisions = [d for start in range(0, len(items), block) for d in match_enhanced(items.iloc[start : start + block], index)]
    del index
    pending, earlier = leftovers(items, decisions)

    openai = OpenAIResource(
        base_url="http://127.0.0.1",  # replaced once the server has its port
        model="bench-model",
        items_per_request=args.shape,
        top_k=args.top_k,
        score_band=args.band,
        requests_per_minute=1e9,
        tokens_per_minute=1e12,
        max_concurrency=16,
    )
    ai_block = STAGE_SPECS["ai"].chunks_per_block * CHUNK_SIZE
    db = ResultsDatabase(f"sqlite:///{work / 'results.db'}")
    began = time.perf_counter()
    with FakeOpenAI() as server:
        openai = openai.model_copy(update={"base_url": server.url})
        with ChatSession(openai.chat_settings()) as session:
            logic = AIStage(openai, session, db, None)
            meta = []
            for start in range(0, len(pending), ai_block):
                part = pending.iloc[start : start + ai_block]
                decided = logic.decide(part, earlier)
                meta += [
                    logic.chunk_metadata([d for d, k in zip(decided, part["chunk_key"], strict=True) if k == key])
                    for key in part["chunk_key"].unique()
                ]
        bodies = server.bodies()
    db.dispose()
    asked = sum(bool(earlier[i].candidates) for i in pending["item_id"])
    count = o200k_counter()
    prompt = sum(m["prompt_tokens"] for m in meta)
    shown = [len(entry["candidates"]) for body in bodies for entry in json.loads(body["messages"][-1]["content"]).values()]
    return {
        "items": len(items),
        "catalog": len(catalog),
        "left": len(pending),
        "asked": asked,
        "requests": sum(m["requests"] for m in meta),
        "prompt_per_item": prompt / asked,
        "prompt_per_request": prompt / max(1, len(bodies)),
        "o200k_per_item": sum(map(count, bodies)) / asked if count else float("nan"),
        "shown_per_item": sum(shown) / max(1, len(shown)),
        "seconds": time.perf_counter() - began,
    }


def measure_recall(root: Path, top_k: int, band: float) -> dict[str, float]:
    from quality_abt_buy import load

    items, catalog, truth = load(root)
    decisions = match_enhanced(items, CatalogIndex.build(catalog, version="abt"))
    left = [d for d in decisions if not d.matched]

    def recall(pick: Callable[[Decision], Sequence[Any]]) -> float:
        return sum(any((d.item_id, c.catalog_id) in truth for c in pick(d)) for d in left) / len(left)

    shown = [len(shown_candidates(d.candidates, top_k, band)) for d in left]
    return {
        "left": len(left),
        "recall_top_k": recall(lambda d: d.candidates[:top_k]),
        "recall_shown": recall(lambda d: shown_candidates(d.candidates, top_k, band)),
        "shown_per_item": sum(shown) / len(shown),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=21_737)
    parser.add_argument("--catalog", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--shape", choices=["chunk", "item"], default="chunk")
    parser.add_argument("--top-k", type=int, default=OpenAIResource().top_k)
    parser.add_argument("--band", type=float, default=OpenAIResource().score_band)
    parser.add_argument("--abt", type=Path, default=REPO.parent / "shared" / "datasets" / "abt_buy")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} cores; prompt version {PROMPT_VERSION}; top_k {args.top_k}, band {args.band}")
    with tempfile.TemporaryDirectory(prefix="mp-ai-tokens-") as tmp:
        t = measure_tokens(args, Path(tmp))
    print(
        f"[tokens] {t['items']:,} items x {t['catalog']:,} entries: {t['left']:,} left for the AI stage, "
        f"{t['asked']:,} asked in {t['requests']:,} requests ({args.shape}), {t['shown_per_item']:.2f} candidates shown "
        f"per item; prompt tokens per item {t['prompt_per_item']:.1f} (server estimate, chars/4; "
        f"{t['prompt_per_request']:.0f} per request), o200k {t['o200k_per_item']:.1f}; {t['seconds']:.0f}s"
    )
    r = measure_recall(args.abt, args.top_k, args.band)
    print(
        f"[recall] Abt-Buy: {r['left']} items left by the enhanced stage; true entry among the first {args.top_k} "
        f"{r['recall_top_k']:.4f}, among those shown {r['recall_shown']:.4f} ({r['shown_per_item']:.2f} shown per item)"
    )
    missed = []
    if not t["prompt_per_item"] <= TARGET_PROMPT_TOKENS_PER_ITEM:
        missed.append(f"prompt tokens per item {t['prompt_per_item']:.1f} > {TARGET_PROMPT_TOKENS_PER_ITEM}")
    if r["recall_shown"] < TARGET_SHOWN_RECALL:
        missed.append(f"shown-candidate recall {r['recall_shown']:.4f} < {TARGET_SHOWN_RECALL}")
    print("TARGETS MISSED: " + "; ".join(missed) if missed else "all targets met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
