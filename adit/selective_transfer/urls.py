from django.urls import path

from adit.core.job_views import job_urlpatterns

from .download import download_study
from .models import SelectiveTransferJob, SelectiveTransferTask
from .views import job_create, study_series

app_name = "selective_transfer"

urlpatterns = [
    path("", job_create, name="job_create"),
    # The study's identifiers are encoded query parameters (see download_study below).
    path("series/", study_series, name="study_series"),
    path(
        # The PatientID and StudyInstanceUID come from a PACS and may hold any character ("/",
        # "%", "#", "?"): they travel as encoded query parameters, never as path segments.
        "download/servers/<int:server_id>/study/",
        download_study,
        name="download_study",
    ),
    *job_urlpatterns(SelectiveTransferJob, SelectiveTransferTask),
]
