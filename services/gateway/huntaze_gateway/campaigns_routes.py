"""`/api/campaigns/*` and the seed's `/api/of/campaigns`: every route is declared in the
campaigns proto (`google.api.http`) and served by `rpc_routes`; this module only declares the
bodies whose members are messages (variants, follow-ups, exclusions) and exposes the service.
Every rule (a valid campaign, who may schedule what) is the campaigns service's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from pydantic import Field

from huntaze.campaigns.v1 import campaigns_pb2
from huntaze_gateway.auth_routes import CurrentCaller, problems
from huntaze_gateway.models import ProtoBody
from huntaze_gateway.rpc_routes import Edge, expose
from huntaze_gateway.state import runtime_of

if TYPE_CHECKING:
    from huntaze.campaigns.v1.campaigns_pb2_grpc import CampaignServiceAsyncStub

# `/api/campaigns` itself is a route: the router's prefix is the common `/api`.
campaigns_router = APIRouter(prefix="/api", tags=["campaigns"])
# The seed's path for the same list and create.
of_campaigns_router = APIRouter(prefix="/api/of", tags=["campaigns"])


def _campaigns(request: Request) -> CampaignServiceAsyncStub:
    return runtime_of(request).campaigns


class VariantIn(ProtoBody, message=campaigns_pb2.Variant, required="key text"):
    """One version of the message; `{name}` is the fan's first name."""


class StepIn(ProtoBody, message=campaigns_pb2.Step, required="delay_minutes text"):
    """A follow-up of a sequence."""


class ExclusionsIn(ProtoBody, message=campaigns_pb2.Exclusions):
    """Fans left out when the audience is resolved."""


class CreateCampaignBody(
    ProtoBody, message=campaigns_pb2.CreateCampaignRequest, required="name kind"
):
    exclusions: ExclusionsIn | None = None
    variants: list[VariantIn] = Field(
        default_factory=list, description="At least one (or a `templateId`), at most 4."
    )
    steps: list[StepIn] = Field(default_factory=list, description="Sequences: the follow-ups.")


class UpdateCampaignBody(
    ProtoBody, message=campaigns_pb2.UpdateCampaignRequest, omit="campaign_id", partial=True
):
    """Drafts only; members that are present replace the campaign's."""

    variants: list[VariantIn] | None = Field(default=None, description="Replaces every variant.")


class ScheduleCampaignBody(
    ProtoBody, message=campaigns_pb2.ScheduleCampaignRequest, omit="campaign_id"
):
    send_at: str = Field(
        default="",
        description="A local date and time in the campaign's time zone (`2026-12-01T18:00`), "
        "or an instant with its offset; empty: now.",
    )


expose(
    (of_campaigns_router, campaigns_router),
    campaigns_pb2.DESCRIPTOR.services_by_name["CampaignService"],
    Edge(caller=CurrentCaller, stub_of=_campaigns, problems=problems),
)
