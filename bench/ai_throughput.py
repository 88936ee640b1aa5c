"""Throughput of the AI stage against a rate-limited, slow model server, for both request shapes.

    python bench/ai_throughput.py [--items 2000] [--latency 0.5] [--rpm 600] [--shape item|chunk|both]

The local OpenAI-compatible server (tests/servers/openai_server.py) answers after ``--latency``
seconds and enforces ``--rpm`` as a token bucket that answers 429 with Retry-After when exceeded.
Unmatched synthetic items, ten candidates each, go through the AI stage logic block by block as
the asset runs them (``STAGE_SPECS["ai"].chunks_per_block`` chunks per block, one chat session for
the whole run), with the client paced to the same rpm. For each shape it prints:

  * wall_s     time to decide every item
  * bound_s    what the limit and the latency allow: requests / (rpm / 60) + one latency
  * ratio      wall_s / bound_s (target <= 1.15)
  * share_429  429 answers among all HTTP requests (target < 2%)
  * requests and tokens per item, and accuracy against the known answers (target 100%)
  * rerun      the same items again: requests made (target 0, all from the cache) and its time

Exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from matching_pipeline.clients.openai_chat import ChatSession  # noqa: E402
from matching_pipeline.defs.assets.ai import AIStage  # noqa: E402
from matching_pipeline.defs.openai_resource import OpenAIResource  # noqa: E402
from matching_pipeline.defs.stages import STAGE_SPECS  # noqa: E402
from matching_pipeline.results.store import CHUNK_SIZE, ResultsDatabase  # noqa: E402
from tests.servers.openai_server import FakeOpenAI, synthetic_workload  # noqa: E402

TARGET_RATIO = 1.15
TARGET_SHARE_429 = 0.02


def run_shape(shape: str, items: int, latency: float, rpm: float, workdir: Path) -> dict[str, float]:
    frame, earlier, truth = synthetic_workload(items, k=10)
    block_items = STAGE_SPECS["ai"].chunks_per_block * CHUNK_SIZE
    blocks = [frame.iloc[i : i + block_items] for i in range(0, len(frame), block_items)]
    db = ResultsDatabase(f"sqlite:///{workdir / f'{shape}.db'}")
    openai = OpenAIResource(
        base_url="http://127.0.0.1",  # replaced below, once the server has its port
        model="bench-model",
        items_per_request=shape,  # type: ignore[arg-type]
        requests_per_minute=rpm,
        tokens_per_minute=50_000_000,  # not the limit under test
        max_concurrency=32,
    )
    with FakeOpenAI(latency_s=latency, requests_per_minute=rpm) as server:
        openai = openai.model_copy(update={"base_url": server.url})

        def decide_all() -> tuple[float, list, list[dict]]:
            with ChatSession(openai.chat_settings()) as session:
                logic = AIStage(openai, session, db, None)
                began = time.perf_counter()
                decisions, chunk_meta = [], []
                for block in blocks:
                    decided = logic.decide(block, earlier)
                    decisions += decided
                    for key in block["chunk_key"].unique():
                        in_chunk = [d for d, k in zip(decided, block["chunk_key"], strict=True) if k == key]
                        chunk_meta.append(logic.chunk_metadata(in_chunk))
                return time.perf_counter() - began, decisions, chunk_meta

        wall, decisions, meta = decide_all()
        statuses = server.statuses()
        server.reset()
        rerun_wall, rerun_decisions, _ = decide_all()
        rerun_requests = server.count
    db.dispose()

    answered = statuses.count(200)
    bound = answered / (rpm / 60.0) + latency
    tokens = sum(m["prompt_tokens"] + m["completion_tokens"] for m in meta)
    return {
        "items": items,
        "wall_s": wall,
        "bound_s": bound,
        "ratio": wall / bound,
        "http_requests": len(statuses),
        "answered": answered,
        "rate_limited": statuses.count(429),
        "share_429": statuses.count(429) / len(statuses),
        "requests_per_item": sum(m["requests"] for m in meta) / items,
        "prompt_tokens_per_item": sum(m["prompt_tokens"] for m in meta) / items,
        "completion_tokens_per_item": sum(m["completion_tokens"] for m in meta) / items,
        "tokens_per_item": tokens / items,
        "accuracy": sum(d.catalog_id == truth[d.item_id] for d in decisions) / items,
        "errors": sum(d.error is not None for d in decisions),
        "rerun_requests": rerun_requests,
        "rerun_s": rerun_wall,
        "rerun_accuracy": sum(d.catalog_id == truth[d.item_id] for d in rerun_decisions) / items,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--rpm", type=float, default=600)
    parser.add_argument("--shape", choices=["item", "chunk", "both"], default="both")
    args = parser.parse_args()

    shapes = ["item", "chunk"] if args.shape == "both" else [args.shape]
    print(f"{args.items} items, 10 candidates each; server latency {args.latency}s, limit {args.rpm:g} rpm; "
          f"{STAGE_SPECS['ai'].chunks_per_block} chunks per block")
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in shapes:
            r = run_shape(shape, args.items, args.latency, args.rpm, Path(tmp))
            print(
                f"[{shape}] wall {r['wall_s']:.1f}s  bound {r['bound_s']:.1f}s  ratio {r['ratio']:.3f}  "
                f"429s {r['rate_limited']}/{r['http_requests']} ({r['share_429']:.2%})  "
                f"requests/item {r['requests_per_item']:.2f}  tokens/item {r['tokens_per_item']:.0f} "
                f"(prompt {r['prompt_tokens_per_item']:.0f}, completion {r['completion_tokens_per_item']:.0f})  "
                f"accuracy {r['accuracy']:.2%}  errors {r['errors']}  "
                f"rerun: {r['rerun_requests']} requests in {r['rerun_s']:.1f}s",
                flush=True,
            )
            checks = {
                f"ratio {r['ratio']:.3f} > {TARGET_RATIO}": r["ratio"] > TARGET_RATIO,
                f"429 share {r['share_429']:.2%} >= {TARGET_SHARE_429:.0%}": r["share_429"] >= TARGET_SHARE_429,
                f"rerun made {r['rerun_requests']} requests": r["rerun_requests"] > 0,
                f"accuracy {r['accuracy']:.2%}": r["accuracy"] < 1 or r["rerun_accuracy"] < 1,
            }
            failed += [f"[{shape}] {what}" for what, missed in checks.items() if missed]
    for line in failed:
        print(f"MISSED {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
