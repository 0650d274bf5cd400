"""The installation-wide pseudonymization seed, group defaults of the PS3.15 options, the admin."""

import pytest
from django.test import override_settings
from django.urls import reverse

from adit.accounts.factories import GroupFactory, UserFactory
from adit.core.deidentification import options_for_new_job, pseudonymization_seed
from adit.core.models import GroupDeidentificationDefaults


def test_the_seed_depends_on_pseudonym_and_salt_only():
    first = pseudonymization_seed("PSN-1")

    assert pseudonymization_seed("PSN-1") == first
    assert pseudonymization_seed("PSN-2") != first
    with override_settings(PSEUDONYM_SALT="another installation"):
        assert pseudonymization_seed("PSN-1") != first
    assert "PSN-1" not in first


@override_settings(PSEUDONYM_SALT="")
def test_without_a_salt_there_is_no_seed():
    with pytest.raises(ValueError, match="PSEUDONYM_SALT is not set"):
        pseudonymization_seed("PSN-1")


@pytest.mark.django_db
def test_options_come_from_the_active_group_unless_chosen():
    group = GroupFactory()
    user = UserFactory(groups=[group])
    assert options_for_new_job(user, None) == []
    GroupDeidentificationDefaults.objects.create(
        group=group, options=["clean_descriptors", "retain_modified_dates"]
    )

    assert options_for_new_job(user, None) == ["retain_modified_dates", "clean_descriptors"]
    assert options_for_new_job(user, []) == []
    with pytest.raises(ValueError, match="not both"):
        options_for_new_job(user, ["retain_full_dates", "retain_modified_dates"])


@pytest.mark.django_db
def test_staff_set_a_groups_defaults_in_the_admin(admin_client):
    group = GroupFactory(name="Lung cohort")
    url = reverse("admin:core_groupdeidentificationdefaults_add")

    refused = admin_client.post(
        url, {"group": group.pk, "options": ["retain_full_dates", "retain_modified_dates"]}
    )
    saved = admin_client.post(url, {"group": group.pk, "options": ["retain_safe_private"]})

    assert "not both" in refused.content.decode()
    assert saved.status_code == 302
    assert GroupDeidentificationDefaults.objects.get(group=group).options == ["retain_safe_private"]
    listing = admin_client.get(reverse("admin:core_groupdeidentificationdefaults_changelist"))
    assert "Retain Safe Private" in listing.content.decode()
