"""The explorer's URLs. UIDs are path segments (digits and dots only, checked by the forms);
the PatientID travels as a query parameter, because a PACS's PatientID may hold ``/``."""

from django.urls import path

from . import views

app_name = "dicom_explorer"

SERIES = "servers/<int:server_id>/studies/<str:study_uid>/series/<str:series_uid>/"

urlpatterns = [
    path("", views.server_list, name="server_list"),
    path("servers/<int:server_id>/", views.search, name="search"),
    path("servers/<int:server_id>/patient/", views.patient, name="patient"),
    path("servers/<int:server_id>/studies/<str:study_uid>/", views.study, name="study"),
    path(SERIES, views.series, name="series"),
    path(SERIES + "thumbnail.png", views.series_thumbnail, name="series_thumbnail"),
    path(SERIES + "instances/<str:sop_uid>/", views.instance, name="instance"),
    path(
        SERIES + "instances/<str:sop_uid>/image.png",
        views.instance_image,
        name="instance_image",
    ),
]
