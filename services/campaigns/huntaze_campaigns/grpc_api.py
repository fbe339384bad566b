# ruff: noqa: N802  (method names are the proto's)
"""The CampaignService gRPC servicer: thin, it maps messages to use cases and back. Every method
acts for the creator of the caller's access token."""

from __future__ import annotations

import uuid

from huntaze.campaigns.v1 import campaigns_pb2 as pb
from huntaze.campaigns.v1 import campaigns_pb2_grpc
from huntaze.common.v1 import common_pb2
from huntaze_campaigns import convert
from huntaze_campaigns.measurement import Comparison
from huntaze_campaigns.service import CampaignsService, Draft, Metrics, VariantResult
from huntaze_kit.errors import Unauthenticated
from huntaze_kit.grpc_server import AccessPolicy, Context
from huntaze_kit.identity import current_principal

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["CampaignService"].full_name


def _methods(*names: str) -> frozenset[str]:
    return frozenset(f"/{SERVICE_NAME}/{name}" for name in names)


def access_policy() -> AccessPolicy:
    """No public method, no service caller; whatever messages fans or changes what will be
    sent needs a verified email address, as in the CRM."""
    return AccessPolicy(
        public_methods=frozenset(),
        service_methods={},
        verified_email_methods=_methods(
            "CreateCampaign",
            "UpdateCampaign",
            "ScheduleCampaign",
            "ResumeCampaign",
            "UnsendCampaign",
            "UpdateTemplate",
        ),
    )


def _creator() -> uuid.UUID:
    try:
        return uuid.UUID(current_principal().creator_id)
    except ValueError as exc:
        raise Unauthenticated(message="Invalid token.", reason="INVALID_TOKEN") from exc


def _variant(result: VariantResult) -> pb.VariantMetrics:
    return pb.VariantMetrics(
        key=result.key,
        recipients=result.recipients,
        sent=result.sent,
        failed=result.failed,
        skipped_budget=result.skipped_budget,
        skipped_other=result.skipped_other,
        pending=result.pending,
        stopped=result.stopped,
        purchases=result.purchases,
        revenue_cents=result.revenue_cents,
        converted=result.converted,
        conversion=result.conversion,
        revenue_per_recipient_cents=result.revenue_per_recipient,
        opened=result.opened,
        unsent=result.unsent,
    )


def _comparison(found: Comparison) -> pb.Comparison:
    return pb.Comparison(
        label=found.label,
        difference=found.difference,
        interval=pb.Interval(low=found.low, high=found.high),
        p_value=found.p_value,
        significant=found.significant,
        verdict=found.verdict,
    )


def metrics_message(metrics: Metrics) -> pb.CampaignMetrics:
    campaign = metrics.campaign
    return pb.CampaignMetrics(
        campaign_id=str(campaign.id),
        audience=campaign.audience_count,
        excluded=campaign.excluded_count,
        total=_variant(metrics.total),
        variants=[_variant(v) for v in metrics.variants],
        holdout=metrics.holdout,
        holdout_converted=metrics.holdout_converted,
        holdout_conversion=(
            metrics.holdout_converted / metrics.holdout if metrics.holdout else 0.0
        ),
        lift=_comparison(metrics.lift) if metrics.lift is not None else None,
        variant_comparisons=[_comparison(c) for c in metrics.comparisons],
        computed_at=convert.timestamp(metrics.computed_at),
    )


class CampaignServicer(campaigns_pb2_grpc.CampaignServiceServicer):
    def __init__(self, service: CampaignsService) -> None:
        self._service = service

    async def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: Context
    ) -> pb.ListTemplatesResponse:
        rows = await self._service.list_templates(
            creator_id=_creator(), niche=convert.NICHE_NAMES.get(request.niche)
        )
        return pb.ListTemplatesResponse(
            templates=[convert.template(row, results) for row, results in rows]
        )

    async def UpdateTemplate(
        self, request: pb.UpdateTemplateRequest, context: Context
    ) -> pb.Template:
        row, results = await self._service.update_template(
            creator_id=_creator(),
            template_id=request.template_id,
            name=request.name if request.HasField("name") else None,
            text=request.text if request.HasField("text") else None,
            price_cents=request.price_cents if request.HasField("price_cents") else None,
        )
        return convert.template(row, results)

    async def ListCampaigns(
        self, request: pb.ListCampaignsRequest, context: Context
    ) -> pb.ListCampaignsResponse:
        rows, token = await self._service.list_campaigns(
            creator_id=_creator(),
            status=convert.STATUS_NAMES.get(request.status),
            page_size=request.page.page_size,
            page_token=request.page.page_token,
        )
        return pb.ListCampaignsResponse(
            campaigns=[convert.campaign(row) for row in rows],
            page=common_pb2.PageResponse(next_page_token=token),
        )

    async def CreateCampaign(
        self, request: pb.CreateCampaignRequest, context: Context
    ) -> pb.Campaign:
        row = await self._service.create_campaign(
            creator_id=_creator(),
            draft=Draft(
                name=request.name,
                kind=convert.KIND_NAMES.get(request.kind, ""),
                list_id=request.list_id,
                silent_for_days=request.silent_for_days,
                exclusions=convert.exclusion_fields(request.exclusions),
                variants=tuple(convert.variant_fields(v) for v in request.variants),
                steps=tuple(convert.step_fields(s) for s in request.steps),
                holdout_percent=request.holdout_percent,
                attribution_window_hours=request.attribution_window_hours,
                timezone=request.timezone,
                template_id=request.template_id,
            ),
        )
        return convert.campaign(row)

    async def GetCampaign(self, request: pb.GetCampaignRequest, context: Context) -> pb.Campaign:
        row = await self._service.get_campaign(
            creator_id=_creator(), campaign_id=request.campaign_id
        )
        return convert.campaign(row)

    async def UpdateCampaign(
        self, request: pb.UpdateCampaignRequest, context: Context
    ) -> pb.Campaign:
        row = await self._service.update_campaign(
            creator_id=_creator(),
            campaign_id=request.campaign_id,
            name=request.name if request.HasField("name") else None,
            list_id=request.list_id if request.HasField("list_id") else None,
            holdout_percent=(
                request.holdout_percent if request.HasField("holdout_percent") else None
            ),
            timezone=request.timezone if request.HasField("timezone") else None,
            variants=[convert.variant_fields(v) for v in request.variants] or None,
        )
        return convert.campaign(row)

    async def DeleteCampaign(
        self, request: pb.DeleteCampaignRequest, context: Context
    ) -> pb.DeleteCampaignResponse:
        await self._service.delete_campaign(creator_id=_creator(), campaign_id=request.campaign_id)
        return pb.DeleteCampaignResponse()

    async def ScheduleCampaign(
        self, request: pb.ScheduleCampaignRequest, context: Context
    ) -> pb.Campaign:
        row = await self._service.schedule(
            creator_id=_creator(), campaign_id=request.campaign_id, send_at=request.send_at
        )
        return convert.campaign(row)

    async def PauseCampaign(
        self, request: pb.PauseCampaignRequest, context: Context
    ) -> pb.Campaign:
        row = await self._service.pause(creator_id=_creator(), campaign_id=request.campaign_id)
        return convert.campaign(row)

    async def ResumeCampaign(
        self, request: pb.ResumeCampaignRequest, context: Context
    ) -> pb.Campaign:
        row = await self._service.resume(creator_id=_creator(), campaign_id=request.campaign_id)
        return convert.campaign(row)

    async def CancelCampaign(
        self, request: pb.CancelCampaignRequest, context: Context
    ) -> pb.Campaign:
        row = await self._service.cancel(creator_id=_creator(), campaign_id=request.campaign_id)
        return convert.campaign(row)

    async def UnsendCampaign(
        self, request: pb.UnsendCampaignRequest, context: Context
    ) -> pb.Campaign:
        row = await self._service.unsend(creator_id=_creator(), campaign_id=request.campaign_id)
        return convert.campaign(row)

    async def GetCampaignMetrics(
        self, request: pb.GetCampaignMetricsRequest, context: Context
    ) -> pb.CampaignMetrics:
        metrics = await self._service.metrics(
            creator_id=_creator(), campaign_id=request.campaign_id
        )
        return metrics_message(metrics)
