from django.contrib import admin
from django.urls import include, path

from adit.accounts import urls as accounts_urls

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("adit.accounts.urls")),
    path("accounts/", include(accounts_urls.plain_urlpatterns)),
    path("api/", include("adit.accounts.api_urls")),
    path("api/dicom-web/", include("adit.dicom_web.urls")),
    path("api/", include("adit.api.urls")),
    path(
        "selective-transfer/",
        include("adit.selective_transfer.urls", namespace="selective_transfer"),
    ),
    path("batch-query/", include("adit.batch_query.urls", namespace="batch_query")),
    path("batch-transfer/", include("adit.batch_transfer.urls", namespace="batch_transfer")),
    path("explorer/", include("adit.dicom_explorer.urls", namespace="dicom_explorer")),
    path("upload/", include("adit.upload.urls", namespace="upload")),
    path("audit/", include("adit.audit.urls", namespace="audit")),
    path("", include("adit.observability.urls")),
    path("", include("adit.core.urls")),
]
