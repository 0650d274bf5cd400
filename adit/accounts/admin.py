"""Admin for users (with their active group), groups (with their users) and API tokens."""

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import UserChangeForm
from django.contrib.auth.models import Group

from .models import Token, User


class AditUserChangeForm(UserChangeForm):
    class Meta(UserChangeForm.Meta):
        model = User

    def clean(self) -> dict[str, Any]:
        cleaned_data = super().clean()
        active_group = cleaned_data.get("active_group")
        groups = cleaned_data.get("groups")
        if active_group is not None and groups is not None and active_group not in groups:
            self.add_error(
                "active_group",
                f"The active group must be one of the user's groups; add {active_group.name} "
                "to the groups or choose another active group.",
            )
        return cleaned_data


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = AditUserChangeForm
    list_display = (
        "username",
        "email",
        "first_name",
        "last_name",
        "department",
        "active_group",
        "is_staff",
    )
    list_filter = ("is_staff", "is_superuser", "is_active", "groups")
    search_fields = ("username", "first_name", "last_name", "email", "department")
    fieldsets = (
        *(DjangoUserAdmin.fieldsets or ()),
        ("ADIT", {"fields": ("department", "phone_number", "active_group", "preferences")}),
    )


class GroupAdminForm(forms.ModelForm):
    """The group form with the group's members, so users can be added from the group's side."""

    users = forms.ModelMultipleChoiceField(
        queryset=User.objects.order_by("username"),
        required=False,
        widget=FilteredSelectMultiple("users", is_stacked=False),
    )

    class Meta:
        model = Group
        fields = ("name", "permissions", "users")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["users"].initial = self.instance.user_set.all()

    def _save_m2m(self) -> None:
        super()._save_m2m()  # type: ignore[misc]
        group: Group = self.instance
        group.user_set.set(self.cleaned_data["users"])  # type: ignore[attr-defined]
        # Members who were removed keep a stale active group until their next request;
        # fix it now so permissions change at once.
        for user in User.objects.filter(active_group=group).exclude(groups=group):
            user.ensure_valid_active_group()
        for user in group.user_set.filter(active_group__isnull=True):  # type: ignore[attr-defined]
            user.ensure_valid_active_group()


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(DjangoGroupAdmin):
    form = GroupAdminForm


@admin.register(Token)
class TokenAdmin(admin.ModelAdmin):
    list_display = ("fraction", "owner", "description", "created", "expires", "last_used")
    list_filter = ("owner",)
    search_fields = ("owner__username", "description", "fraction")
    fields = ("owner", "description", "expires", "fraction", "token_hashed", "created", "last_used")
    readonly_fields = ("owner", "fraction", "token_hashed", "created", "last_used")

    def has_add_permission(self, request) -> bool:
        # A token's clear text is shown only once to its owner, so tokens are made on the
        # token page (or by create_superuser), never here.
        return False
