"""Registries that apps fill in their `AppConfig.ready()`."""

from dataclasses import dataclass


@dataclass(frozen=True)
class MainMenuItem:
    """An entry of the navbar's apps menu.

    Attributes:
        url_name: The name of the URL the entry links to (reversed without arguments).
        label: The text shown.
        icon: A bootstrap-icons name without the ``bi-`` prefix, e.g. ``"send"``.
        staff_only: Shown to staff only.
        permission: Shown only to users who have this permission (``"app.codename"``).
    """

    url_name: str
    label: str
    icon: str = ""
    staff_only: bool = False
    permission: str = ""

    def is_visible_to(self, user) -> bool:
        if not user.is_authenticated:
            return False
        if self.staff_only and not user.is_staff:
            return False
        return not self.permission or user.has_perm(self.permission)


# Home comes first and Admin last (see context_processors); registered apps go in between.
main_menu_items: list[MainMenuItem] = []


def register_main_menu_item(
    url_name: str, label: str, *, icon: str = "", staff_only: bool = False, permission: str = ""
) -> MainMenuItem:
    """Add an entry to the apps menu (idempotent per `url_name`, so a re-run `ready()` is fine)."""
    item = MainMenuItem(url_name, label, icon, staff_only, permission)
    main_menu_items[:] = [existing for existing in main_menu_items if existing.url_name != url_name]
    main_menu_items.append(item)
    return item
