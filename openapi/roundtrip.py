"""A real round trip through the Python client generated from openapi/openapi.json.

Usage: python roundtrip.py BASE_URL ADMIN_KEY
Needs the generated package `bigpeer_client` on PYTHONPATH (see check-clients.sh). Creates an API
key with the admin API, inserts a document with /store/execute, reads it back with
/store/execute (waiting for the write with X-DITTO-TXN-ID), /store/findbyid and /store/count,
and checks that each answer matches. Prints the new API key on the last line of stdout.
"""

import sys

from bigpeer_client import AuthenticatedClient, Client
from bigpeer_client.api.admin import create_key
from bigpeer_client.api.legacy import count, find_by_id
from bigpeer_client.api.operations import healthz
from bigpeer_client.api.store import execute
from bigpeer_client.models import (
    CountRequest,
    CreateKey,
    ExecuteRequest,
    ExecuteResponse,
    FindByIdRequest,
    Permission,
    Permissions,
)
from bigpeer_client.models.execute_request_args_type_0 import ExecuteRequestArgsType0


def check(condition, what):
    if not condition:
        raise SystemExit(f"roundtrip: {what}")


def main():
    base_url, admin_key = sys.argv[1], sys.argv[2]

    health = healthz.sync(client=Client(base_url=base_url))
    check(health is not None and health.status.value == "ok", f"/healthz answered {health!r}")

    admin = AuthenticatedClient(base_url=base_url, token=admin_key)
    created = create_key.sync_detailed(
        client=admin,
        body=CreateKey(
            name="openapi-roundtrip",
            permissions=Permissions(
                read=Permission(everything=True), write=Permission(everything=True)
            ),
        ),
    )
    check(created.status_code == 201, f"create key: {created.status_code} {created.content!r}")
    key = created.parsed.key
    check(isinstance(key, str) and key, "create key: no secret in the answer")

    client = AuthenticatedClient(base_url=base_url, token=key)
    doc = {
        "_id": "roundtrip-1",
        "color": "blue",
        "year": 2024,
        "price": 12.5,
        "owner": {"name": "Ada", "tags": ["a", "b"]},
        "sold": False,
    }
    inserted = execute.sync_detailed(
        client=client,
        body=ExecuteRequest(
            statement="INSERT INTO cars DOCUMENTS (:doc)",
            args=ExecuteRequestArgsType0.from_dict({"doc": doc}),
        ),
    )
    check(inserted.status_code == 200, f"insert: {inserted.status_code} {inserted.content!r}")
    written = inserted.parsed
    check(isinstance(written, ExecuteResponse), f"insert: not parsed: {inserted.content!r}")
    check(written.query_type.value == "mutation", f"insert: queryType {written.query_type}")
    check(written.mutated_document_ids == ["roundtrip-1"], f"insert: {written.mutated_document_ids}")
    check(written.error.to_dict() == {}, f"insert: error {written.error.to_dict()}")

    selected = execute.sync_detailed(
        client=client,
        body=ExecuteRequest(
            statement="SELECT * FROM cars WHERE _id = :id",
            args=ExecuteRequestArgsType0.from_dict({"id": "roundtrip-1"}),
        ),
        x_ditto_txn_id=str(written.transaction_id),
    )
    check(selected.status_code == 200, f"select: {selected.status_code} {selected.content!r}")
    items = [item.to_dict() for item in selected.parsed.items]
    check(items == [doc], f"select: got {items}, inserted {doc}")

    by_id = find_by_id.sync_detailed(
        client=client, body=FindByIdRequest(collection="cars", id="roundtrip-1")
    )
    check(by_id.status_code == 200, f"findbyid: {by_id.status_code} {by_id.content!r}")
    fields = {k: v for k, v in doc.items() if k != "_id"}
    check(by_id.parsed.id == "roundtrip-1", f"findbyid: id {by_id.parsed.id!r}")
    check(by_id.parsed.fields.to_dict() == fields, f"findbyid: {by_id.parsed.fields.to_dict()}")

    counted = count.sync_detailed(
        client=client, body=CountRequest(collection="cars", query="color == 'blue'")
    )
    check(counted.status_code == 200, f"count: {counted.status_code} {counted.content!r}")
    check(counted.parsed.count == 1, f"count: {counted.parsed.count}")

    bad = execute.sync_detailed(client=client, body=ExecuteRequest(statement="SELEC nothing"))
    check(bad.status_code == 400, f"invalid DQL: {bad.status_code} {bad.content!r}")
    check(bad.parsed.query_type.value == "unknown", f"invalid DQL: {bad.parsed.query_type}")
    check(bad.parsed.error.code == "query/invalid", f"invalid DQL: {bad.parsed.error.code}")

    print("roundtrip: the generated Python client inserted and read back the document", file=sys.stderr)
    print(key)


if __name__ == "__main__":
    main()
