from django.urls import path

from adit.core.job_views import job_urlpatterns

from .download import download_study
from .models import SelectiveTransferJob, SelectiveTransferTask
from .views import job_create

app_name = "selective_transfer"

urlpatterns = [
    path("", job_create, name="job_create"),
    path(
        "download/servers/<int:server_id>/patients/<str:patient_id>/studies/<str:study_uid>/",
        download_study,
        name="download_study",
    ),
    *job_urlpatterns(SelectiveTransferJob, SelectiveTransferTask),
]
