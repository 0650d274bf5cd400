from django.urls import path

from adit.core.job_views import job_urlpatterns

from .models import BatchTransferJob, BatchTransferTask
from .views import job_create, job_create_from_query

app_name = "batch_transfer"

urlpatterns = [
    path("", job_create, name="job_create"),
    path("from-query/<int:query_job_id>/", job_create_from_query, name="job_create_from_query"),
    *job_urlpatterns(BatchTransferJob, BatchTransferTask),
]
