from django.urls import path

from adit.core.job_views import job_urlpatterns

from .download import download_study
from .models import SelectiveTransferJob, SelectiveTransferTask
from .views import job_create

app_name = "selective_transfer"

urlpatterns = [
    path("", job_create, name="job_create"),
    path(
        # The PatientID and StudyInstanceUID come from a PACS and may hold any character ("/",
        # "%", "#", "?"): they travel as encoded query parameters, never as path segments.
        "download/servers/<int:server_id>/study/",
        download_study,
        name="download_study",
    ),
    *job_urlpatterns(SelectiveTransferJob, SelectiveTransferTask),
]
