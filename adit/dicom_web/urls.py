"""DICOMweb URLs: /api/dicom-web/<ae_title>/qidors|wadors|stowrs/... (no trailing slashes)."""

from django.urls import path, re_path

from . import views

STUDY = "studies/<str:study_uid>"
SERIES = f"{STUDY}/series/<str:series_uid>"
INSTANCE = f"{SERIES}/instances/<str:image_uid>"

urlpatterns = [
    path(
        "<str:ae_title>/qidors/studies",
        views.QidoStudiesView.as_view(),
        name="qido_rs-studies",
    ),
    path(
        "<str:ae_title>/qidors/series",
        views.QidoSeriesView.as_view(),
        name="qido_rs-series",
    ),
    path(
        "<str:ae_title>/qidors/instances",
        views.QidoInstancesView.as_view(),
        name="qido_rs-images",
    ),
    path(
        f"<str:ae_title>/qidors/{STUDY}/instances",
        views.QidoInstancesView.as_view(),
        name="qido_rs-images_with_study_uid",
    ),
    path(
        f"<str:ae_title>/qidors/{STUDY}/series",
        views.QidoSeriesView.as_view(),
        name="qido_rs-series_with_study_uid",
    ),
    path(
        f"<str:ae_title>/qidors/{SERIES}/instances",
        views.QidoInstancesView.as_view(),
        name="qido_rs-images_with_study_uid_and_series_uid",
    ),
    path(
        f"<str:ae_title>/wadors/{STUDY}",
        views.WadoView.as_view(),
        name="wado_rs-study_with_study_uid",
    ),
    path(
        f"<str:ae_title>/wadors/{STUDY}/metadata",
        views.WadoMetadataView.as_view(),
        name="wado_rs-study_metadata_with_study_uid",
    ),
    path(
        f"<str:ae_title>/wadors/{SERIES}",
        views.WadoView.as_view(),
        name="wado_rs-series_with_study_uid_and_series_uid",
    ),
    path(
        f"<str:ae_title>/wadors/{SERIES}/metadata",
        views.WadoMetadataView.as_view(),
        name="wado_rs-series_metadata_with_study_uid_and_series_uid",
    ),
    path(
        f"<str:ae_title>/wadors/{INSTANCE}",
        views.WadoView.as_view(),
        name="wado_rs-image_with_study_uid_and_series_uid_and_image_uid",
    ),
    path(
        f"<str:ae_title>/wadors/{INSTANCE}/metadata",
        views.WadoMetadataView.as_view(),
        name="wado_rs-image_metadata_with_study_uid_and_series_uid_and_image_uid",
    ),
    path(
        f"<str:ae_title>/wadors/{INSTANCE}/bulkdata/<str:tag>",
        views.WadoBulkDataView.as_view(),
        name="wado_rs-bulkdata",
    ),
    path(
        f"<str:ae_title>/wadors/{INSTANCE}/frames/<str:frames>",
        views.WadoFramesView.as_view(),
        name="wado_rs-frames",
    ),
    path(
        f"<str:ae_title>/wadors/{INSTANCE}/frames/<str:frames>/rendered",
        views.WadoRenderedView.as_view(),
        name="wado_rs-frames_rendered",
    ),
    *[
        path(f"<str:ae_title>/wadors/{level}/{kind}", view.as_view(), name=f"wado_rs-{name}_{kind}")
        for level, name in ((STUDY, "study"), (SERIES, "series"), (INSTANCE, "instance"))
        for kind, view in (
            ("rendered", views.WadoRenderedView),
            ("thumbnail", views.WadoThumbnailView),
        )
    ],
    path("<str:ae_title>/stowrs/studies", views.StowView.as_view(), name="stow_rs-series"),
    path(
        f"<str:ae_title>/stowrs/{STUDY}",
        views.StowView.as_view(),
        name="stow_rs-series_with_study_uid",
    ),
    # Last: everything else under the prefix answers a JSON 404 (not Django's HTML page).
    re_path(r"^.*$", views.UnknownRouteView.as_view(), name="unknown_route"),
]
