"""Login, profile, active group switching and API token pages."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .forms import LoginForm, StyledPasswordChangeForm, TokenCreateForm
from .models import Token, User

# The clear token of a just-created token waits here for exactly one render of the token page.
NEW_TOKEN_SESSION_KEY = "accounts_new_token"


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        # Django's LoginView puts the request's host ("127.0.0.1:8000") in `site_name`; the
        # page names the installation instead.
        context["site_name"] = settings.SITE_NAME
        return context


class LogoutView(auth_views.LogoutView):
    """POST only (Django's default); redirects to LOGOUT_REDIRECT_URL."""


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "accounts/password_change.html"
    form_class = StyledPasswordChangeForm
    success_url = reverse_lazy("accounts:profile")

    def form_valid(self, form):
        response = super().form_valid(form)
        messages.success(self.request, "Your password was changed.")
        return response


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)  # login_required guarantees a signed-in ADIT user
    return user


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    return render(
        request,
        "accounts/profile.html",
        {"profile_user": user, "groups": user.groups.order_by("name")},
    )


def _back_url(request: HttpRequest) -> str:
    """Where the request came from, if that is a page of this site; else home."""
    referrer = request.headers.get("referer", "")
    if referrer and url_has_allowed_host_and_scheme(
        referrer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return referrer
    return reverse("home")


def _refresh_or_back(request: HttpRequest, status: int = 204) -> HttpResponse:
    if getattr(request, "htmx", False):
        response = HttpResponse(status=status)
        response["HX-Refresh"] = "true"
        return response
    return HttpResponseRedirect(_back_url(request))


@login_required
def python_client(request: HttpRequest) -> HttpResponse:
    """How to use ADIT from Python: token, package, a first script with this ADIT's address
    and the servers the active group may use."""
    from adit.core.models import DicomServer
    from adit.dicom_web.models import QUERY_PERMISSION, RETRIEVE_PERMISSION, STORE_PERMISSION

    user = _user(request)
    servers = DicomServer.objects.accessible_by_user  # type: ignore[attr-defined]
    sources = list(servers(user, "source").order_by("ae_title").values_list("ae_title", flat=True))
    destinations = list(
        servers(user, "destination").order_by("ae_title").values_list("ae_title", flat=True)
    )
    context = {
        "server_url": request.build_absolute_uri("/").rstrip("/"),
        "sources": sources,
        "destinations": destinations,
        "example_source": sources[0] if sources else "PACS1",
        "token_count": Token.objects.filter(owner=user).count(),
        "permissions": [
            ("search (QIDO-RS)", user.has_perm(QUERY_PERMISSION)),
            ("retrieve (WADO-RS)", user.has_perm(RETRIEVE_PERMISSION)),
            ("store (STOW-RS)", user.has_perm(STORE_PERMISSION)),
        ],
    }
    return render(request, "accounts/python_client.html", context)


@login_required
@require_POST
def switch_active_group(request: HttpRequest) -> HttpResponse:
    """Make one of the user's groups the active one (posted field `group` = group id)."""
    user = _user(request)
    group_id = str(request.POST.get("group", ""))
    group = None
    if group_id.isdigit():
        group = user.groups.filter(pk=int(group_id)).first()
    if group is None:
        messages.error(
            request,
            f"Cannot switch to group {group_id!r}: you are not a member of such a group.",
        )
        return _refresh_or_back(request, status=403)
    user.active_group = group
    user.save(update_fields=["active_group"])
    messages.success(request, f"Active group is now {group.name}.")
    return _refresh_or_back(request)


@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    """List the user's API tokens and create new ones."""
    user = _user(request)
    if request.method == "POST":
        form = TokenCreateForm(request.POST, user=user)
        if form.is_valid():
            _, clear_token = Token.objects.create_token(
                owner=user,
                description=form.cleaned_data["description"],
                expires=form.expires_at(),
            )
            request.session[NEW_TOKEN_SESSION_KEY] = clear_token
            messages.success(request, "The token was created. Copy it now; it is shown once.")
            return redirect("accounts:tokens")
    else:
        form = TokenCreateForm(user=user)
    return render(
        request,
        "accounts/tokens.html",
        {
            "form": form,
            "tokens": user.tokens.all(),
            "new_token": request.session.pop(NEW_TOKEN_SESSION_KEY, None),
        },
    )


@login_required
def delete_token(request: HttpRequest, pk: int) -> HttpResponse:
    """Confirm (GET) and delete (POST) one of the user's own tokens."""
    token = get_object_or_404(Token, pk=pk, owner=_user(request))
    if request.method == "POST":
        token.delete()
        messages.success(request, f"The token {token.fraction}… was deleted.")
        return redirect("accounts:tokens")
    return render(request, "accounts/token_confirm_delete.html", {"token": token})


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    active_group = serializers.CharField(allow_null=True)


class MeView(APIView):
    """Who the API token belongs to (a tiny endpoint to check a token)."""

    serializer_class = MeSerializer

    def get(self, request: Request) -> Response:
        user = request.user
        assert isinstance(user, User)
        active_group: Group | None = user.active_group  # type: ignore[assignment]
        return Response(
            {
                "username": user.username,
                "active_group": active_group.name if active_group else None,
            }
        )
