"""URLs of the test-only example app, mounted next to ADIT's own (test settings only)."""

from django.urls import include, path

from adit.core.job_views import job_urlpatterns
from adit.urls import handler400, handler403, handler404, handler500  # noqa: F401 (used by Django)
from adit.urls import urlpatterns as adit_urlpatterns

from .models import ExampleTransferJob, ExampleTransferTask

example_patterns = (job_urlpatterns(ExampleTransferJob, ExampleTransferTask), "example_app")

urlpatterns = [path("example-app/", include(example_patterns)), *adit_urlpatterns]
