#!/usr/bin/env python3
"""How long the OpenAI sandbox takes to judge and run a full Batch API input, with its catalog rules and
prompt cache on.

Starts an in-process sandbox on 127.0.0.1 (instant batch phases) and, through the official SDK, uploads
--lines lines of about 3 KB (a vision request with --photos photo URLs and the seller's notes, as the
test suite's big batch), creates the batch and waits for it to complete; the clock runs from the
upload's first byte to status ``completed``. Then the same input naming a shut-down model (the batch
fails at validation), and --cached-lines lines sharing 1,100 tokens of instructions, so that every line
after the first is a prompt-cache hit. The floor: each within --floor seconds (30), so a test or demo
batch never waits on the sandbox.

    .venv/bin/python bench/sandbox_batch.py [--lines 50000] [--photos 6] [--floor 30]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from openai import OpenAI

from harness import load_average, markdown_table, note  # puts the repository root on sys.path
from services.sandbox import SandboxServer

NOTES = "Seller says small dent on the rear bumper, otherwise fine. " * 19
LONG_INSTRUCTIONS = "Describe every visible damage of the car in the photos, panel by panel, as HTML. " * 53


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=50_000, help="batch lines (default 50,000, the maximum)")
    parser.add_argument("--photos", type=int, default=6, help="photo URLs per line (default 6)")
    parser.add_argument("--cached-lines", type=int, default=10_000,
                        help="lines of the batch with a shared 1,100-token prefix (default 10,000)")
    parser.add_argument("--model", default="gpt-6.1-terra", help="model named by every line (gpt-6.1-terra)")
    parser.add_argument("--floor", type=float, default=30.0, help="seconds allowed for the whole batch (30)")
    return parser.parse_args(argv)


def write_input(path: str, lines: int, photos: int, model: str, instructions: str = NOTES,
                notes: str = NOTES) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(lines):
            content = [{"type": "input_text", "text": f"Seller's notes: {notes}"}]
            content += [{"type": "input_image", "image_url": f"https://img.example/{i}/{k}.jpg", "detail": "auto"}
                        for k in range(photos)]
            body = {"model": model, "instructions": instructions, "store": False,
                    "input": [{"role": "user", "content": content}]}
            fh.write(json.dumps({"custom_id": f"car-{i}", "method": "POST", "url": "/v1/responses",
                                 "body": body}) + "\n")


def run_batch(client: OpenAI, path: str, timeout: float) -> tuple[float, object]:
    started = time.monotonic()
    with open(path, "rb") as fh:
        file_id = client.files.create(file=("input.jsonl", fh, "application/jsonl"), purpose="batch").id
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/responses", completion_window="24h")
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"batch {batch.id} still {batch.status} after {timeout:.0f} s")
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    return time.monotonic() - started, batch


def main(argv=None) -> int:
    args = parse_args(argv)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as workdir, SandboxServer() as sandbox:
        client = OpenAI(api_key="sk-bench", base_url=sandbox.url, max_retries=0, timeout=600)
        good = os.path.join(workdir, "good.jsonl")
        write_input(good, args.lines, args.photos, args.model)
        size_mb = os.path.getsize(good) / 2 ** 20
        note(f"{args.lines:,} lines, {size_mb:.0f} MB; running the batch")
        seconds, batch = run_batch(client, good, timeout=max(600.0, args.floor * 10))
        cached = batch.usage.input_tokens_details.cached_tokens if batch.usage else 0
        bad = os.path.join(workdir, "bad.jsonl")
        write_input(bad, args.lines, args.photos, "o4-mini")
        note("the same input naming a shut-down model")
        refused_seconds, refused = run_batch(client, bad, timeout=600.0)
        shared = os.path.join(workdir, "shared.jsonl")
        write_input(shared, args.cached_lines, 1, args.model, instructions=LONG_INSTRUCTIONS, notes="none")
        note(f"{args.cached_lines:,} lines sharing their instructions")
        cached_seconds, cached_batch = run_batch(client, shared, timeout=600.0)
        stats = sandbox.stats()
    rows = [
        [f"{args.lines:,} lines ({size_mb:.0f} MB), {args.model}", batch.status,
         f"{batch.request_counts.completed:,} done, {batch.request_counts.failed:,} failed", f"{cached:,}",
         f"{seconds:.1f} s", f"≤ {args.floor:g} s", "met" if seconds <= args.floor and batch.status == "completed"
         else "NOT met"],
        [f"{args.lines:,} lines naming o4-mini", refused.status,
         f"{len(refused.errors.data) if refused.errors else 0} errors reported", "0", f"{refused_seconds:.1f} s",
         f"≤ {args.floor:g} s", "met" if refused_seconds <= args.floor and refused.status == "failed" else "NOT met"],
        [f"{args.cached_lines:,} lines, shared 1,100-token instructions", cached_batch.status,
         f"{cached_batch.request_counts.completed:,} done", f"{cached_batch.usage.input_tokens_details.cached_tokens:,}",
         f"{cached_seconds:.1f} s", f"≤ {args.floor:g} s",
         "met" if cached_seconds <= args.floor and cached_batch.status == "completed" else "NOT met"],
    ]
    print(markdown_table(["Batch", "Status", "Lines", "Cached input tokens", "Upload to settled", "Floor", ""],
                         rows))
    print(f"\nLoad average before: {load_before}; refusals counted by the sandbox: {stats['refused']}; "
          f"batches failed at validation: {stats['batches_failed_validation']}.")
    return 0 if all(row[-1] == "met" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
