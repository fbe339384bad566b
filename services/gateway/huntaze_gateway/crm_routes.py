"""`/api/crm/*` and `/api/messages/*`: HTTP/JSON in, the CRM service's gRPC API out.

Thin like the auth routes: the gateway checks the shape of the input, verifies the access token
locally, forwards it as `authorization` metadata, and turns the answer into camelCase JSON. Every
rule (what a valid fan is, who may see what) is the CRM's; its errors become problem documents
through the one mapping in `problems`. Field violations of list filters are renamed to the query
parameters they came from (`page.page_token` -> `cursor`).

Every route is declared in the proto (`rpc_routes`), `GET /api/crm/stream` too (the CRM's
`WatchInboxBatches`, one Server-Sent Event per event), with its query parameters' names
(`search`, `archived`, `sort`), what the bodies leave out and the reply's `Idempotency-Key`
header. Enum values are lower-case names (`onlyfans`, `ppv_unlock`); sort names are the field
sorted by (`lastMessageAt`), ascending, or descending after a `-` (`-lastMessageAt`).
"""

from __future__ import annotations

from fastapi import APIRouter

from huntaze.crm.v1 import crm_pb2
from huntaze_gateway.auth_routes import CurrentCaller, problems
from huntaze_gateway.of_routes import of_router
from huntaze_gateway.rpc_routes import Edge, expose
from huntaze_gateway.state import runtime_of

crm_router = APIRouter(prefix="/api/crm", tags=["crm"])
messages_router = APIRouter(prefix="/api/messages", tags=["messages"])


expose(
    (crm_router, messages_router, of_router),
    crm_pb2.DESCRIPTOR.services_by_name["CrmService"],
    Edge(caller=CurrentCaller, stub_of=lambda request: runtime_of(request).crm, problems=problems),
)
