"""Jobs API under /api/: transfer-jobs/ and batch-query-jobs/ (list, create, detail, tasks,
actions), the OpenAPI schema at /api/schema/ and its docs page at /api/docs/."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from . import views

app_name = "api"

urlpatterns = [
    path("transfer-jobs/", views.TransferJobListView.as_view(), name="transfer_job_list"),
    path("transfer-jobs/<int:pk>/", views.JobDetailView.as_view(), name="transfer_job_detail"),
    path("transfer-jobs/<int:pk>/tasks/", views.JobTasksView.as_view(), name="transfer_job_tasks"),
    *[
        path(
            f"transfer-jobs/<int:pk>/{action}/",
            views.JobActionView.as_view(action=action),
            name=f"transfer_job_{action}",
        )
        for action in views.JOB_ACTIONS
    ],
    path("batch-query-jobs/", views.BatchQueryJobListView.as_view(), name="batch_query_job_list"),
    path(
        "batch-query-jobs/<int:pk>/",
        views.BatchQueryJobDetailView.as_view(),
        name="batch_query_job_detail",
    ),
    path(
        "batch-query-jobs/<int:pk>/tasks/",
        views.BatchQueryJobTasksView.as_view(),
        name="batch_query_job_tasks",
    ),
    path(
        "batch-query-jobs/<int:pk>/results/",
        views.BatchQueryJobResultsView.as_view(),
        name="batch_query_job_results",
    ),
    *[
        path(
            f"batch-query-jobs/<int:pk>/{action}/",
            views.BatchQueryJobActionView.as_view(action=action),
            name=f"batch_query_job_{action}",
        )
        for action in views.JOB_ACTIONS
    ],
    # The schema and its docs are public (they describe the API, no data); calls need a token.
    path(
        "schema/",
        SpectacularAPIView.as_view(permission_classes=[AllowAny], authentication_classes=[]),
        name="schema",
    ),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(
            url_name="api:schema", permission_classes=[AllowAny], authentication_classes=[]
        ),
        name="docs",
    ),
]
