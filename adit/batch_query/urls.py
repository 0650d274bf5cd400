from django.urls import path

from adit.core.job_views import job_urlpatterns

from .models import BatchQueryJob, BatchQueryTask
from .views import download, job_create, results

app_name = "batch_query"

urlpatterns = [
    path("", job_create, name="job_create"),
    path("jobs/<int:pk>/results/", results, name="results"),
    path("jobs/<int:pk>/download/", download, name="download"),
    *job_urlpatterns(BatchQueryJob, BatchQueryTask),
]
