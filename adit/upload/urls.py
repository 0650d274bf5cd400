from django.urls import path

from adit.core.job_views import job_urlpatterns

from .models import UploadJob, UploadTask
from .views import job_commit, job_create, job_instances, job_new

app_name = "upload"

urlpatterns = [
    path("", job_create, name="job_create"),
    path("jobs/new/", job_new, name="job_new"),
    path("jobs/<int:pk>/instances/", job_instances, name="job_instances"),
    path("jobs/<int:pk>/commit/", job_commit, name="job_commit"),
    *job_urlpatterns(UploadJob, UploadTask),
]
