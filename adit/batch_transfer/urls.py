from django.urls import path

from adit.core.job_views import job_urlpatterns

from .models import BatchTransferJob, BatchTransferTask
from .views import job_create

app_name = "batch_transfer"

urlpatterns = [
    path("", job_create, name="job_create"),
    *job_urlpatterns(BatchTransferJob, BatchTransferTask),
]
