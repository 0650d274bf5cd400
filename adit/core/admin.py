"""Admin pages of the core app."""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse

from adit.core.deidentification import DEID_OPTION_CHOICES, options_for_new_job
from adit.core.dicom.deid_profile import describe_options
from adit.core.models import (
    DicomFolder,
    DicomNodeGroupAccess,
    DicomServer,
    GroupDeidentificationDefaults,
    ProjectSettings,
)
from adit.core.node_checks import check_server

admin.site.site_header = "ADIT administration"
admin.site.site_title = "ADIT admin"
admin.site.index_title = "Servers, folders, groups, users and the apps' settings"

# --- Project settings (the one row: announcement, maintenance mode) -----------------------------


@admin.register(ProjectSettings)
class ProjectSettingsAdmin(admin.ModelAdmin):
    list_display = ["__str__", "maintenance"]
    fields = ["maintenance", "announcement"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A singleton: ProjectSettings.get() creates the row; a second one would be ignored.
        return not ProjectSettings.objects.exists() and super().has_add_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


# --- The apps' settings (lock, suspend, transfer window): one row per app -----------------------


class DicomAppSettingsAdmin(admin.ModelAdmin):
    """Admin of an app's `DicomAppSettings` row; each app registers its model with it."""

    list_display = [
        "__str__",
        "locked",
        "suspended",
        "transfer_window_start",
        "transfer_window_end",
    ]
    fieldsets = [
        (None, {"fields": ["locked", "suspended"]}),
        (
            "Transfer window",
            {
                "description": "Non-urgent tasks of the app only run inside this window "
                "(server time); leave both empty to run them at any time.",
                "fields": [("transfer_window_start", "transfer_window_end")],
            },
        ),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A singleton: the app's settings `get()` creates the row; a second one is ignored.
        return not self.model.objects.exists() and super().has_add_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context=None):
        self.model.get()  # the row exists before anyone looks for it
        return super().changelist_view(request, extra_context)


# --- DICOM nodes (servers, folders, group access) -----------------------------------------------


class DicomNodeGroupAccessInline(admin.TabularInline):
    model = DicomNodeGroupAccess
    fk_name = "node"
    extra = 1
    fields = ["group", "source", "destination"]


class DicomFolderGroupAccessInline(DicomNodeGroupAccessInline):
    fields = ["group", "destination"]


def connection_check(server: DicomServer) -> tuple[bool, str]:
    """Check a server (C-ECHO and/or QIDO-RS): whether all succeeded and what happened."""
    results = check_server(server.to_config(), settings.CALLING_AE_TITLE)
    return all(result.ok for result in results), "; ".join(str(result) for result in results)


def report_connection_check(request: HttpRequest, server: DicomServer) -> None:
    """Check a server and show the outcome as an admin message."""
    ok, summary = connection_check(server)
    if ok:
        messages.success(request, f"{server.name}: {summary}")
    else:
        messages.error(request, f"{server.name}: {summary}")


def receiver_registration() -> dict[str, object]:
    """What a PACS admin registers so the PACS answers ADIT and C-MOVEs to its receiver."""
    host = settings.STORE_SCP_HOST
    return {
        "calling_ae_title": settings.CALLING_AE_TITLE,
        "receiver_ae_title": settings.RECEIVER_AE_TITLE,
        "receiver_host": host,
        "receiver_port": settings.STORE_SCP_PORT,
        # The receiver listens on this address; a loopback or wildcard address is not what a
        # PACS on another machine can reach, so say so instead of showing it as the answer.
        "host_is_local": host in ("", "0.0.0.0", "::", "127.0.0.1", "::1", "localhost"),
    }


@admin.register(DicomServer)
class DicomServerAdmin(admin.ModelAdmin):
    change_form_template = "admin/core/dicomserver/change_form.html"
    list_display = ["name", "ae_title", "host", "port", "dicomweb_root_url", "active"]
    list_filter = ["active"]
    search_fields = ["name", "ae_title", "host", "dicomweb_root_url"]
    inlines = [DicomNodeGroupAccessInline]
    actions = ["test_connection"]
    fieldsets = [
        (None, {"fields": ["name", "active", "max_associations", "max_search_results"]}),
        (
            "DIMSE",
            {
                "fields": [
                    "ae_title",
                    "host",
                    "port",
                    ("patient_root_find_support", "study_root_find_support"),
                    ("patient_root_get_support", "study_root_get_support"),
                    ("patient_root_move_support", "study_root_move_support"),
                    "pushes_from_any_host",
                    "store_scp_support",
                ]
            },
        ),
        (
            "DICOMweb",
            {
                "fields": [
                    "dicomweb_root_url",
                    ("dicomweb_qido_support", "dicomweb_qido_prefix"),
                    ("dicomweb_wado_support", "dicomweb_wado_prefix"),
                    ("dicomweb_stow_support", "dicomweb_stow_prefix"),
                    "dicomweb_authorization_header",
                ]
            },
        ),
    ]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "dicomweb_authorization_header":
            # Masked on screen (it is a credential); staff can still replace it.
            kwargs["widget"] = forms.PasswordInput(render_value=True)
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.action(description="Test connection (C-ECHO / QIDO-RS)")
    def test_connection(self, request, queryset):
        for server in queryset:
            report_connection_check(request, server)

    def get_urls(self):
        custom = [
            path(
                "<path:object_id>/test-connection/",
                self.admin_site.admin_view(self.test_connection_view),
                name="core_dicomserver_test_connection",
            )
        ]
        return custom + super().get_urls()

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context = {**context, "receiver": receiver_registration()}
        return super().render_change_form(request, context, add, change, form_url, obj)

    def test_connection_view(self, request: HttpRequest, object_id: str):
        """POST: check the server. The page's script asks for JSON and shows the result next
        to the button; without the script the result comes back as a message."""
        server = get_object_or_404(DicomServer, pk=object_id)
        wants_json = "application/json" in request.headers.get("Accept", "")
        if not self.has_view_or_change_permission(request, server):
            error = "You may not test this server."
        elif request.method != "POST":
            error = "Use the Test connection button to test a server."
        else:
            error = ""
        if wants_json:
            if error:
                status = 405 if request.method != "POST" else 403
                return JsonResponse({"ok": False, "summary": error}, status=status)
            ok, summary = connection_check(server)
            return JsonResponse({"ok": ok, "summary": summary})
        if error:
            messages.error(request, error)
        else:
            report_connection_check(request, server)
        return HttpResponseRedirect(reverse("admin:core_dicomserver_change", args=[server.pk]))


@admin.register(DicomFolder)
class DicomFolderAdmin(admin.ModelAdmin):
    list_display = ["name", "path", "quota", "warn_size", "active"]
    list_filter = ["active"]
    search_fields = ["name", "path"]
    fields = ["name", "active", "path", "quota", "warn_size"]
    inlines = [DicomFolderGroupAccessInline]


# --- De-identification defaults per group ----------------------------------------------------


class GroupDeidentificationDefaultsForm(forms.ModelForm):
    options = forms.MultipleChoiceField(
        choices=DEID_OPTION_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=(
            "Preselected for the group's new transfer jobs; the Basic Application Level "
            "Confidentiality Profile (DICOM PS3.15 E.1) always applies."
        ),
    )

    class Meta:
        model = GroupDeidentificationDefaults
        fields = ["group", "options"]

    def clean_options(self) -> list[str]:
        try:
            return options_for_new_job(None, self.cleaned_data["options"])
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None


@admin.register(GroupDeidentificationDefaults)
class GroupDeidentificationDefaultsAdmin(admin.ModelAdmin):
    form = GroupDeidentificationDefaultsForm
    list_display = ["group", "described_options"]

    @admin.display(description="Options")
    def described_options(self, obj: GroupDeidentificationDefaults) -> str:
        return "; ".join(describe_options(obj.options)[1:]) or "(Basic Profile only)"
