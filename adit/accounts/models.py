"""Users with an active group, and API tokens."""

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractUser, Group
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


class User(AbstractUser):
    """An ADIT user. Permissions and node access come from the *active* group only."""

    phone_number = models.CharField(max_length=64, blank=True)
    department = models.CharField(max_length=128, blank=True)
    preferences = models.JSONField(default=dict, blank=True)
    active_group = models.ForeignKey(
        Group,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The group whose permissions and node access apply to this user right now.",
    )

    # Membership of the active group is checked where it is chosen (change_active_group, the
    # admin form, which sees the groups being saved) and repaired by ActiveGroupMiddleware.

    def change_active_group(self, group: Group) -> None:
        """Make `group` the active one; the user must be a member of it."""
        if not self.groups.filter(pk=group.pk).exists():
            raise ValidationError(f"{self.username} is not a member of the group {group.name}.")
        self.active_group = group
        self.save(update_fields=["active_group"])

    def ensure_valid_active_group(self) -> None:
        """Pick the first group when the active group is unset or no longer one of the user's."""
        if self.active_group_id and self.groups.filter(pk=self.active_group_id).exists():
            return
        first_group = self.groups.order_by("name").first()
        if first_group != self.active_group:
            self.active_group = first_group
            self.save(update_fields=["active_group"])

    def join_group(self, group: Group, *, activate: bool = False) -> None:
        """Add the user to `group`; make it active when asked or when none is active yet."""
        self.groups.add(group)
        if activate or self.active_group_id is None:
            self.active_group = group
            self.save(update_fields=["active_group"])


# --- API tokens ---------------------------------------------------------------------------------

# How long a token stays valid, keyed by the form value; None means it never expires.
TOKEN_EXPIRY_CHOICES: dict[str, tuple[str, timedelta | None]] = {
    "1": ("1 day", timedelta(days=1)),
    "7": ("7 days", timedelta(days=7)),
    "30": ("30 days", timedelta(days=30)),
    "90": ("90 days", timedelta(days=90)),
    "never": ("Never", None),
}
NEVER_EXPIRING_TOKEN_PERMISSION = "accounts.can_generate_never_expiring_token"
# Recording every use would write a row per API request; once a minute is precise enough.
LAST_USED_UPDATE_INTERVAL = timedelta(minutes=1)


def hash_token(token: str) -> str:
    """The stored form of a clear token.

    Deterministic (keyed by the fixed `TOKEN_AUTHENTICATION_SALT`), so a presented token is
    found by equality of its hash. Changing the salt invalidates every token.
    """
    salt = settings.TOKEN_AUTHENTICATION_SALT.encode()
    return hmac.new(salt, token.encode(), hashlib.sha256).hexdigest()


def generate_token() -> str:
    """A new clear token: 20 random bytes as 40 hex characters."""
    return secrets.token_hex(20)


class TokenManager(models.Manager):
    def create_token(
        self,
        owner: User,
        description: str = "",
        expires: datetime | None = None,
        clear_token: str | None = None,
    ) -> tuple["Token", str]:
        """Store a new token (only its hash) and return it together with the clear token.

        `clear_token` is generated unless given (the superuser bootstrap brings its own).
        """
        if clear_token is None:
            clear_token = generate_token()
        token = self.create(
            owner=owner,
            token_hashed=hash_token(clear_token),
            fraction=clear_token[:4],
            description=description,
            expires=expires,
        )
        return token, clear_token

    def find_by_clear_token(self, clear_token: str) -> "Token | None":
        return self.select_related("owner").filter(token_hashed=hash_token(clear_token)).first()


class Token(models.Model):
    """An API token. Only its hash is stored; the clear token is shown to its owner once."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokens"
    )
    token_hashed = models.CharField(max_length=128, unique=True)
    fraction = models.CharField(
        max_length=4, help_text="The first characters of the clear token, to recognize it."
    )
    description = models.CharField(max_length=120, blank=True)
    expires = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)

    objects = TokenManager()

    class Meta:
        ordering = ["-created"]
        permissions = [
            ("can_generate_never_expiring_token", "Can generate tokens that never expire"),
        ]

    def __str__(self) -> str:
        return f"{self.fraction}… ({self.owner})"

    @property
    def is_expired(self) -> bool:
        return self.expires is not None and self.expires <= timezone.now()

    def record_use(self) -> None:
        """Note that the token was just used (written at most once per interval)."""
        now = timezone.now()
        last_used: datetime | None = self.last_used  # type: ignore[assignment]
        if last_used is not None and now - last_used < LAST_USED_UPDATE_INTERVAL:
            return
        self.last_used = now
        Token.objects.filter(pk=self.pk).update(last_used=now)
