"""`/api/analytics/*` and `/api/dashboard`: the analytics service's figures for the caller.

The JSON routes are declared in the proto and served by `rpc_routes` (`period=7d|30d|90d`,
30 days by default, `granularity=day|hour`). The CSV export is written here: its answer is a
file, not JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from fastapi import APIRouter, Query, Request, Response

from huntaze.analytics.v1 import analytics_pb2
from huntaze_gateway.auth_routes import CurrentCaller, problems
from huntaze_gateway.rpc_routes import Edge, expose
from huntaze_gateway.state import runtime_of

if TYPE_CHECKING:
    from huntaze.analytics.v1.analytics_pb2_grpc import AnalyticsServiceAsyncStub

analytics_router = APIRouter(prefix="/api/analytics", tags=["analytics"])
dashboard_router = APIRouter(prefix="/api", tags=["analytics"])

# The first is the default.
PERIODS = {
    "30d": analytics_pb2.PERIOD_30D,
    "7d": analytics_pb2.PERIOD_7D,
    "90d": analytics_pb2.PERIOD_90D,
}
PeriodName = Literal["30d", "7d", "90d"]


def _analytics(request: Request) -> AnalyticsServiceAsyncStub:
    return runtime_of(request).analytics


@analytics_router.get(
    "/export.csv",
    summary="Daily figures as CSV",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}}, "description": "One line per day."},
        **problems(401, 422),
    },
)
async def export_csv(
    caller: CurrentCaller,
    request: Request,
    period: PeriodName = Query(default="30d", description="The last 7, 30 or 90 days."),  # noqa: B008
) -> Response:
    """The period's daily figures (the creator's days), one line per day with a header line."""
    reply = await _analytics(request).ExportCsv(
        analytics_pb2.ExportCsvRequest(period=PERIODS[period]), **caller.options
    )
    return Response(
        reply.content,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{reply.filename}"'},
    )


expose(
    (analytics_router, dashboard_router),
    analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"],
    Edge(caller=CurrentCaller, stub_of=_analytics, problems=problems),
)
