"""`/api/crm/*` and `/api/messages/*`: HTTP/JSON in, the CRM service's gRPC API out.

Thin like the auth routes: the gateway checks the shape of the input, verifies the access token
locally, forwards it as `authorization` metadata, and turns the answer into camelCase JSON. Every
rule (what a valid fan is, who may see what) is the CRM's; its errors become problem documents
through the one mapping in `problems`. Field violations of list filters are renamed to the query
parameters they came from (`page.page_token` -> `cursor`).

Every route is declared in the proto (`rpc_routes`), `GET /api/crm/stream` too (the CRM's
`WatchInbox` as Server-Sent Events); what stays here is the edge's own: the query names of the
sorts and the reply's `Idempotency-Key` header. Enum values are lower-case names
(`onlyfans`, `ppv_unlock`); sort names are the field sorted by (`lastMessageAt`), ascending, or
descending after a `-` (`-lastMessageAt`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from huntaze.crm.v1 import crm_pb2
from huntaze_gateway.auth_routes import CurrentCaller, problems
from huntaze_gateway.models import ProtoBody
from huntaze_gateway.of_routes import of_router
from huntaze_gateway.rpc_routes import Edge, Exposed, expose
from huntaze_gateway.state import runtime_of

crm_router = APIRouter(prefix="/api/crm", tags=["crm"])
messages_router = APIRouter(prefix="/api/messages", tags=["messages"])


# ---------------------------------------------------------------------------------------------
# Bodies that say more than the proto (the others are made from it, `models.body_model`).


class UpdateConversationBody(
    ProtoBody, message=crm_pb2.UpdateConversationRequest, omit="conversation_id", partial=True
):
    def proto_fields(self, *, sent_only: bool = False) -> dict[str, Any]:
        values = super().proto_fields(sent_only=sent_only)
        if "assigned_member_id" in values:  # null unassigns, as "" does
            values["assigned_member_id"] = values["assigned_member_id"] or ""
        return values


class ReplyBody(ProtoBody, message=crm_pb2.SendMessageRequest, omit="sender_kind"):
    """A person's message (`sender_kind` is for services)."""


class AutomationBudgetIn(
    ProtoBody, message=crm_pb2.AutomationBudget, required="messages_per_fan_per_day"
):
    pass


class UpdateAutomationBudgetBody(ProtoBody, message=crm_pb2.UpdateAutomationBudgetRequest):
    budget: AutomationBudgetIn


def _created_or_earlier(
    _: Request, reply: crm_pb2.SendMessageResponse, answer: Response
) -> Response:
    answer.status_code = 201 if reply.created else 200
    return answer


# ---------------------------------------------------------------------------------------------
# The RPCs whose route the proto declares (`google.api.http`): served without a handler here.

expose(
    (crm_router, messages_router, of_router),
    crm_pb2.DESCRIPTOR.services_by_name["CrmService"],
    Edge(caller=CurrentCaller, stub_of=lambda request: runtime_of(request).crm, problems=problems),
    (
        Exposed(
            "SendMessage",
            headers={"Idempotency-Key": "idempotency_key"},
            then=_created_or_earlier,
            statuses={200: "The key was used before: the earlier message."},
        ),
    ),
)
