# ruff: noqa: N802  (method names are the proto's)
"""The AnalyticsService gRPC servicer: thin, every method acts for the creator of the caller's
access token and reads nothing of anyone else."""

from __future__ import annotations

import uuid

from huntaze.analytics.v1 import analytics_pb2 as pb
from huntaze.analytics.v1 import analytics_pb2_grpc
from huntaze_analytics.service import AnalyticsService
from huntaze_kit.errors import Unauthenticated
from huntaze_kit.grpc_server import AccessPolicy, Context
from huntaze_kit.identity import current_principal

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["AnalyticsService"].full_name


def access_policy() -> AccessPolicy:
    """No public method, no service account: only creators read their own figures."""
    return AccessPolicy(
        public_methods=frozenset(), service_methods={}, verified_email_methods=frozenset()
    )


def _creator() -> uuid.UUID:
    try:
        return uuid.UUID(current_principal().creator_id)
    except ValueError as exc:
        raise Unauthenticated(message="Invalid token.", reason="INVALID_TOKEN") from exc


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, service: AnalyticsService) -> None:
        self._service = service

    async def GetOverview(self, request: pb.GetOverviewRequest, context: Context) -> pb.Overview:
        return await self._service.overview(creator_id=_creator(), period=request.period)

    async def GetDashboard(self, request: pb.GetDashboardRequest, context: Context) -> pb.Dashboard:
        return await self._service.dashboard(creator_id=_creator())

    async def GetSeries(self, request: pb.GetSeriesRequest, context: Context) -> pb.Series:
        return await self._service.series(
            creator_id=_creator(), period=request.period, granularity=request.granularity
        )

    async def GetFanInsights(
        self, request: pb.GetFanInsightsRequest, context: Context
    ) -> pb.FanInsights:
        return await self._service.fan_insights(creator_id=_creator(), period=request.period)

    async def GetSummary(
        self, request: pb.GetSummaryRequest, context: Context
    ) -> pb.InsightSummary:
        return await self._service.summary(creator_id=_creator(), period=request.period)

    async def ExportCsv(
        self, request: pb.ExportCsvRequest, context: Context
    ) -> pb.ExportCsvResponse:
        return await self._service.export_csv(creator_id=_creator(), period=request.period)
