"""Admin for users (with their active group), groups (with their users, node access and a role
preset instead of raw permissions) and API tokens."""

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import UserChangeForm
from django.contrib.auth.models import Group

from adit.core.models import DicomNodeGroupAccess

from .models import Token, User
from .roles import ROLES, matching_role, role_permissions

NO_ACTIVE_GROUP_LABEL = "None yet (the user is in no group)"


class AditUserChangeForm(UserChangeForm):
    class Meta(UserChangeForm.Meta):
        model = User

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        active_group = self.fields.get("active_group")
        if isinstance(active_group, forms.ModelChoiceField):
            # "---------" told admins nothing; an empty choice is only right without groups.
            active_group.empty_label = NO_ACTIVE_GROUP_LABEL
            active_group.help_text = (
                "The group whose permissions and node access apply to this user right now. "
                "Left empty, the user's first group (by name) becomes active; users switch "
                "it themselves in the navigation bar."
            )

    def clean(self) -> dict[str, Any]:
        cleaned_data = super().clean()
        active_group = cleaned_data.get("active_group")
        groups = cleaned_data.get("groups")
        if active_group is None and groups:
            cleaned_data["active_group"] = groups.order_by("name").first()
            return cleaned_data
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


ROLE_KEEP = ""
ROLE_CHOICES = [
    (ROLE_KEEP, "Custom (the permissions chosen below)"),
    *((role.key, role.label) for role in ROLES.values()),
]


class GroupAdminForm(forms.ModelForm):
    """The group form with the group's members, so users can be added from the group's side,
    and a role preset that sets the group's permissions in one choice."""

    role = forms.ChoiceField(
        label="Role",
        choices=ROLE_CHOICES,
        required=False,
        help_text=" ".join(f"{role.label}: {role.description}" for role in ROLES.values())
        + " Choosing a role replaces the permissions below with the role's.",
    )
    users = forms.ModelMultipleChoiceField(
        queryset=User.objects.order_by("username"),
        required=False,
        widget=FilteredSelectMultiple("users", is_stacked=False),
    )

    class Meta:
        model = Group
        fields = ("name", "role", "permissions", "users")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["users"].initial = self.instance.user_set.all()
            self.fields["role"].initial = matching_role(
                self.instance.permissions.select_related("content_type")
            )
        if "permissions" in self.fields:
            self.fields["permissions"].required = False

    def clean(self) -> dict[str, Any]:
        cleaned_data = super().clean()
        role = cleaned_data.get("role")
        if role:
            cleaned_data["permissions"] = role_permissions(role)
        return cleaned_data

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


class GroupNodeAccessInline(admin.TabularInline):
    """The servers and folders the group may use (the same rows as on each node's page)."""

    model = DicomNodeGroupAccess
    fk_name = "group"
    extra = 1
    fields = ["node", "source", "destination"]
    verbose_name = "node access"
    verbose_name_plural = "node access (servers and folders the group may use)"


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(DjangoGroupAdmin):
    form = GroupAdminForm
    inlines = [GroupNodeAccessInline]
    fieldsets = (
        (None, {"fields": ("name", "role", "users")}),
        (
            "Individual permissions",
            {
                "classes": ("collapse",),
                "description": "Usually set by the role above; change them here only for a "
                "group that needs something between the roles.",
                "fields": ("permissions",),
            },
        ),
    )


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
