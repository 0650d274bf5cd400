from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from .models import ProjectSettings
from .toasts import add_toast

ANNOUNCEMENT_MAX_LENGTH = 10_000


class AnnouncementForm(forms.ModelForm):
    class Meta:
        model = ProjectSettings
        fields = ["announcement"]
        widgets = {"announcement": forms.Textarea(attrs={"rows": 5, "class": "form-control"})}
        help_texts = {
            "announcement": "Plain text shown to every signed-in user; empty lines start a new "
            "paragraph. Leave empty to show no announcement."
        }

    def clean_announcement(self) -> str:
        text = self.cleaned_data["announcement"].strip()
        if len(text) > ANNOUNCEMENT_MAX_LENGTH:
            raise forms.ValidationError(
                f"The announcement has {len(text)} characters; at most "
                f"{ANNOUNCEMENT_MAX_LENGTH} are allowed."
            )
        return text


@login_required
def home(request: HttpRequest) -> HttpResponse:
    project_settings = ProjectSettings.get()
    context: dict[str, object] = {
        "project_settings": project_settings,
        "contact": settings.SUPPORT_EMAIL,
    }
    if request.user.is_staff:
        context["announcement_form"] = AnnouncementForm(instance=project_settings)
    return render(request, "core/home.html", context)


@login_required
@require_POST
def edit_announcement(request: HttpRequest) -> HttpResponse:
    """Staff save the home page announcement (HTMX swaps the announcement section)."""
    if not request.user.is_staff:
        raise PermissionDenied("Only staff may edit the announcement.")
    project_settings = ProjectSettings.get()
    form = AnnouncementForm(request.POST, instance=project_settings)
    saved = form.is_valid()
    if saved:
        form.save()
    if not getattr(request, "htmx", False):
        if saved:
            messages.success(request, "The announcement was saved.")
            return redirect("home")
        return render(
            request,
            "core/home.html",
            {"project_settings": project_settings, "announcement_form": form},
            status=400,
        )
    response = render(
        request,
        "core/_announcement.html",
        {
            "project_settings": project_settings,
            "announcement_form": AnnouncementForm(instance=project_settings) if saved else form,
            "announcement_form_open": not saved,
        },
    )
    if saved:
        add_toast(response, "The announcement was saved.")
    return response


def health(request: HttpRequest) -> JsonResponse:
    """200 when the database answers, 503 otherwise (for load balancers and `cli serve`)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # noqa: BLE001 - any database failure means unhealthy
        return JsonResponse({"status": "unavailable", "database": "down"}, status=503)
    return JsonResponse({"status": "ok", "database": "up"})
