"""DICOM node models: validation, group access and conversion to the DICOM layer's config."""

import dataclasses

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from adit.accounts.factories import GroupFactory, UserFactory
from adit.core.dicom.config import ServerConfig
from adit.core.factories import (
    DicomFolderFactory,
    DicomNodeGroupAccessFactory,
    DicomServerFactory,
    DicomWebServerFactory,
)
from adit.core.models import (
    DicomFolder,
    DicomNode,
    DicomNodeGroupAccess,
    DicomServer,
    validate_ae_title,
)

pytestmark = pytest.mark.django_db

User = get_user_model()


def make_user(*groups: Group, active_group: Group | None = None, **kwargs):
    """A member of `groups` whose active group is exactly `active_group` (None: no active group)."""
    user = UserFactory(**kwargs)
    user.groups.add(*groups)
    if active_group is not None:
        user.active_group = active_group
        user.save()
    return user


def validation_messages(instance) -> dict:
    with pytest.raises(ValidationError) as exc_info:
        instance.full_clean()
    return exc_info.value.message_dict


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ae_title, expected",
    [
        ("BAD\\AE", "not allowed in an AE title: '\\\\'"),
        ("TAB\tAE", "not allowed in an AE title: '\\t'"),
        ("UMLAUT_Ä", "not allowed in an AE title: 'Ä'"),
        ("   ", "must not be empty or only spaces"),
        (" LEADING", "must not start or end with a space"),
        ("SEVENTEEN_CHARS_X", "at most 16 are allowed"),
    ],
)
def test_bad_ae_title_is_rejected_with_a_clear_message(ae_title, expected):
    server = DicomServerFactory.build(ae_title=ae_title)
    errors = validation_messages(server)
    assert any(expected in message for message in errors["ae_title"]), errors


@pytest.mark.parametrize("ae_title", ["ORTHANC", "A", "MY-PACS_01 X", "SIXTEEN_CHARS_XY"])
def test_good_ae_titles_pass(ae_title):
    validate_ae_title(ae_title)


@pytest.mark.parametrize("port", [0, 65536, 70000])
def test_port_out_of_range_is_rejected(port):
    server = DicomServerFactory.build(port=port)
    errors = validation_messages(server)
    assert "The port must be between 1 and 65535." in errors["port"]


def test_port_range_is_also_a_database_constraint():
    with pytest.raises(IntegrityError), transaction.atomic():  # pyright: ignore[reportGeneralTypeIssues]
        DicomServerFactory(port=70000)


def test_dicomweb_flag_without_root_url_is_rejected():
    server = DicomServerFactory.build(dicomweb_qido_support=True, dicomweb_stow_support=True)
    errors = validation_messages(server)
    assert errors["dicomweb_qido_support"] == ["QIDO-RS support needs a DICOMweb root URL."]
    assert errors["dicomweb_stow_support"] == ["STOW-RS support needs a DICOMweb root URL."]


def test_dimse_flag_without_host_and_port_is_rejected():
    server = DicomWebServerFactory.build(study_root_find_support=True)
    errors = validation_messages(server)
    assert errors["__all__"] == ["DIMSE support (study root find support) needs a host and port."]


def test_server_must_be_reachable_somehow():
    server = DicomServer(name="Nowhere", ae_title="NOWHERE")
    errors = validation_messages(server)
    assert errors["__all__"] == [
        "The server is not reachable: give a host and port (DIMSE) or a DICOMweb root URL."
    ]


def test_host_without_port_is_rejected():
    server = DicomServer(name="Half", ae_title="HALF", host="pacs.example.org")
    errors = validation_messages(server)
    assert errors["port"] == ["A host needs a port for DIMSE."]


def test_dicomweb_root_url_must_be_http():
    server = DicomWebServerFactory.build(dicomweb_root_url="ftp://pacs/dicom-web")
    errors = validation_messages(server)
    assert errors["dicomweb_root_url"] == [
        "ftp://pacs/dicom-web is not an http:// or https:// URL with a host."
    ]


def test_dicomweb_root_url_may_use_a_host_without_top_level_domain():
    DicomWebServerFactory.build(dicomweb_root_url="http://orthanc:8042/dicom-web").full_clean()


def test_max_associations_must_be_at_least_one():
    server = DicomServerFactory.build(max_associations=0)
    errors = validation_messages(server)
    assert errors["max_associations"] == ["The maximum number of associations must be >= 1."]


def test_valid_servers_pass_validation():
    DicomServerFactory.build().full_clean()
    DicomWebServerFactory.build().full_clean()


def test_ae_title_is_unique():
    DicomServerFactory(ae_title="SAME")
    errors = validation_messages(DicomServerFactory.build(ae_title="SAME"))
    assert "ae_title" in errors


@pytest.mark.parametrize(
    "path, expected",
    [
        ("relative/folder", "The folder path relative/folder must be absolute (start with /)."),
        ("/mnt/../etc", "The folder path /mnt/../etc must not contain '..'."),
    ],
)
def test_bad_folder_path_is_rejected(path, expected):
    errors = validation_messages(DicomFolderFactory.build(path=path))
    assert errors["path"] == [expected]


def test_folder_warn_size_must_not_exceed_quota():
    errors = validation_messages(DicomFolderFactory.build(quota=10, warn_size=20))
    assert errors["warn_size"] == ["The warn size (20 GB) must not exceed the quota (10 GB)."]


def test_access_row_needs_a_right():
    access = DicomNodeGroupAccessFactory.build(
        node=DicomServerFactory(), group=GroupFactory(), source=False, destination=False
    )
    errors = validation_messages(access)
    assert errors["__all__"] == [
        "Give the group source and/or destination access, or delete the row."
    ]


def test_folder_cannot_be_a_source():
    access = DicomNodeGroupAccessFactory.build(
        node=DicomFolderFactory(), group=GroupFactory(), source=True, destination=True
    )
    errors = validation_messages(access)
    assert errors["source"] == ["A folder can only be a destination, not a source."]


def test_access_is_unique_per_node_and_group():
    access = DicomNodeGroupAccessFactory()
    with pytest.raises(IntegrityError), transaction.atomic():  # pyright: ignore[reportGeneralTypeIssues]
        DicomNodeGroupAccess.objects.create(node=access.node, group=access.group, source=True)


# --- node types ---------------------------------------------------------------------------------


def test_node_type_is_set_and_base_rows_resolve_to_subclasses():
    server = DicomServerFactory(name="PACS")
    folder = DicomFolderFactory(name="Downloads")
    nodes = {node.name: node for node in DicomNode.objects.all()}
    assert nodes["PACS"].node_type == DicomNode.NodeType.SERVER
    assert nodes["Downloads"].node_type == DicomNode.NodeType.FOLDER
    assert nodes["PACS"].concrete == server
    assert isinstance(nodes["PACS"].concrete, DicomServer)
    assert isinstance(nodes["Downloads"].concrete, DicomFolder)
    assert nodes["Downloads"].concrete.path == folder.path
    assert server.concrete is server


def test_node_names_are_unique_across_servers_and_folders():
    DicomServerFactory(name="Shared name")
    errors = validation_messages(DicomFolderFactory.build(name="Shared name"))
    assert "name" in errors


# --- access -------------------------------------------------------------------------------------


def accessible_names(user, direction, **kwargs) -> set[str]:
    return set(
        DicomNode.objects.accessible_by_user(user, direction, **kwargs).values_list(
            "name", flat=True
        )
    )


def test_rights_of_two_groups_never_combine_across_access_rows():
    """PR #302: group A's source right and group B's destination right on the same node must
    not give a member of both (active group A) the destination right."""
    group_a = GroupFactory(name="A")
    group_b = GroupFactory(name="B")
    node = DicomServerFactory(name="Node 1")
    DicomNodeGroupAccessFactory(node=node, group=group_a, source=True, destination=False)
    DicomNodeGroupAccessFactory(node=node, group=group_b, source=False, destination=True)
    user = make_user(group_a, group_b, active_group=group_a)

    assert accessible_names(user, "source") == {"Node 1"}
    assert accessible_names(user, "destination") == set()
    assert node.is_accessible_by_user(user, "source")
    assert not node.is_accessible_by_user(user, "destination")

    user.change_active_group(group_b)
    assert accessible_names(user, "source") == set()
    assert accessible_names(user, "destination") == {"Node 1"}

    # Over all groups (the DICOMweb API) each right comes from its own row; one result each.
    assert list(
        DicomNode.objects.accessible_by_user(user, "source", all_groups=True).values_list(
            "name", flat=True
        )
    ) == ["Node 1"]
    assert accessible_names(user, "destination", all_groups=True) == {"Node 1"}


def test_rights_of_a_group_the_user_does_not_belong_to_do_not_count():
    group_a = GroupFactory(name="A")
    other = GroupFactory(name="Other")
    node = DicomServerFactory(name="Node 1")
    DicomNodeGroupAccessFactory(node=node, group=other)
    user = make_user(group_a, active_group=group_a)
    assert accessible_names(user, "source") == set()
    assert accessible_names(user, "source", all_groups=True) == set()


def test_stale_active_group_grants_nothing():
    group = GroupFactory(name="Former")
    DicomNodeGroupAccessFactory(node=DicomServerFactory(name="Node 1"), group=group)
    user = make_user(group, active_group=group)
    user.groups.remove(group)
    assert accessible_names(user, "source") == set()


def test_user_without_active_group_sees_nothing_unless_all_groups():
    group = GroupFactory()
    DicomNodeGroupAccessFactory(node=DicomServerFactory(name="Node 1"), group=group)
    user = make_user(group)
    assert accessible_names(user, "source") == set()
    assert accessible_names(user, "source", all_groups=True) == {"Node 1"}


def test_servers_and_folders_can_be_queried_by_subclass():
    group = GroupFactory()
    server = DicomServerFactory(name="PACS")
    folder = DicomFolderFactory(name="Downloads")
    DicomNodeGroupAccessFactory(node=server, group=group)
    DicomNodeGroupAccessFactory(node=folder, group=group, source=False, destination=True)
    user = make_user(group, active_group=group)

    assert list(DicomServer.objects.accessible_by_user(user, "destination")) == [server]
    assert list(DicomFolder.objects.accessible_by_user(user, "destination")) == [folder]
    assert accessible_names(user, "source") == {"PACS"}
    assert folder.is_accessible_by_user(user, "destination")


def test_superuser_sees_all_active_nodes_without_access_rows():
    DicomServerFactory(name="PACS")
    DicomFolderFactory(name="Downloads")
    DicomServerFactory(name="Retired", active=False)
    admin = User.objects.create_superuser(username="root", email="root@example.org", password="x")
    assert accessible_names(admin, "source") == {"PACS", "Downloads"}
    assert accessible_names(admin, "destination") == {"PACS", "Downloads"}


def test_inactive_nodes_are_hidden():
    group = GroupFactory()
    DicomNodeGroupAccessFactory(node=DicomServerFactory(name="PACS"), group=group)
    retired = DicomServerFactory(name="Retired", active=False)
    DicomNodeGroupAccessFactory(node=retired, group=group)
    user = make_user(group, active_group=group)
    assert accessible_names(user, "source") == {"PACS"}
    assert not retired.is_accessible_by_user(user, "source")


def test_inactive_and_anonymous_users_see_nothing():
    from django.contrib.auth.models import AnonymousUser

    group = GroupFactory()
    DicomNodeGroupAccessFactory(node=DicomServerFactory(name="PACS"), group=group)
    user = make_user(group, active_group=group, is_active=False)
    assert accessible_names(user, "source") == set()
    assert accessible_names(AnonymousUser(), "source") == set()


def test_unknown_direction_is_an_error():
    user = make_user()
    with pytest.raises(ValueError, match="Unknown access direction 'sink'"):
        DicomNode.objects.accessible_by_user(user, "sink")  # type: ignore[arg-type]


# --- config -------------------------------------------------------------------------------------


def test_to_config_carries_every_field():
    server = DicomServerFactory(
        name="Full",
        ae_title="FULL",
        host="pacs.example.org",
        port=104,
        patient_root_get_support=False,
        dicomweb_root_url="https://pacs.example.org/dicom-web",
        dicomweb_qido_prefix="qido",
        dicomweb_wado_prefix="wado",
        dicomweb_stow_prefix="stow",
        dicomweb_qido_support=True,
        dicomweb_wado_support=False,
        dicomweb_stow_support=True,
        dicomweb_authorization_header="Bearer secret",
        max_search_results=50,
        max_associations=2,
    )
    config = DicomServer.objects.get(pk=server.pk).to_config()
    assert isinstance(config, ServerConfig)
    assert {field.name for field in dataclasses.fields(ServerConfig)} <= {
        field.name for field in DicomServer._meta.get_fields()
    }
    for field in dataclasses.fields(ServerConfig):
        assert getattr(config, field.name) == getattr(server, field.name), field.name
    assert config.supports_dimse


def test_to_config_of_a_dicomweb_only_server():
    config = DicomWebServerFactory(dicomweb_root_url="http://orthanc/dicom-web").to_config()
    assert config.port == 0
    assert config.host == ""
    assert not config.supports_dimse
    assert config.dicomweb_root_url == "http://orthanc/dicom-web"
    assert config.dicomweb_qido_support
