"""Two accounts behind the gateway: a file, the batch made from it, its status polls and its output
download all reach the account that holds them (no other account could answer them)."""

from __future__ import annotations

import io
import json

from devhost.simulator import SimulatorConfig
from tests.devhost_harness import dev_host
from tests.test_accounting_e2e import KEY_A, UPSTREAM_KEY, Gateway


def test_files_and_batches_stay_on_the_account_that_holds_them(tmp_path):
    """Two accounts: the file, the batch made from it, its status polls and its output download all
    reach the account that holds them (no other account could answer)."""
    sims = {name: SimulatorConfig(api_key=UPSTREAM_KEY, seed=seed) for name, seed in (("east", 1), ("west", 2))}
    with dev_host(
        tmp_path, {KEY_A: {"id": "team-a", "name": "Team A", "product": "standard"}}, sims, gateway=Gateway
    ) as two:
        client = two.client()
        line = {
            "custom_id": "only",
            "method": "POST",
            "url": "/chat/completions",
            "body": {"model": "gpt-4o-batch", "messages": [{"role": "user", "content": "hi"}]},
        }
        for _ in range(3):  # every round starts again on whichever account the pool picks
            file_id = client.files.create(file=("t.jsonl", io.BytesIO(json.dumps(line).encode())), purpose="batch").id
            two.settle()
            batch = client.batches.create(input_file_id=file_id, endpoint="/chat/completions", completion_window="24h")
            for _ in range(3):
                batch = client.batches.retrieve(batch.id)
            assert batch.status == "completed"
            two.settle()  # the parser pins the output file to the batch's account
            assert json.loads(client.files.content(batch.output_file_id).text.splitlines()[0])["custom_id"] == "only"
        holders = {name for name, sim in two.sims.items() for r in sim.requests if "/batches" in r.path}
        assert holders, "the batches reached a simulator"
        records = [r for r in two.records() if r.get("custom_id") == "only"]
        assert len(records) == 3 and all(r["cost"] > 0 for r in records)
