"""ADIT's requestor associations keep pynetdicom's reactor from stealing DIMSE messages."""

import time

import pytest
from pynetdicom.fsm import InvalidEventError
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from adit.core.dicom.association import ACTIVE_DUL_LOOP_DELAY_SECONDS
from adit.core.dicom.dimse import DimseConnector
from adit.core.dicom.testing.peers import start_orthanc

pytestmark = pytest.mark.peers


def _open(connector: DimseConnector):
    from pynetdicom import build_context

    return connector._associate("TEST", [build_context(Verification)])


def test_reactor_leaves_messages_to_the_caller_between_operations(orthanc_b, local_config):
    connector = DimseConnector(orthanc_b.server_config(), local_config)
    assoc = _open(connector)
    try:
        assert assoc.send_c_echo().Status == 0x0000
        # pynetdicom's reactor runs again after each send_*() and would take this message off
        # the queue within a millisecond; ADIT's held reactor must leave it to the next caller.
        marker = (1, object())
        assoc.dimse.msg_queue.put(marker)
        time.sleep(0.2)
        assert assoc.dimse.msg_queue.get_nowait() is marker
        assert assoc._is_paused
        assert assoc.dul._run_loop_delay == ACTIVE_DUL_LOOP_DELAY_SECONDS
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        connector._finish(assoc)
    assert assoc.is_released
    assoc.join(timeout=5)
    assert not assoc.is_alive()


def test_held_reactor_still_notices_the_peer_going_away(local_config):
    orthanc = start_orthanc("GOING_AWAY")
    try:
        connector = DimseConnector(orthanc.server_config(), local_config)
        assoc = _open(connector)
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        orthanc.stop()
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not assoc.is_established
    assoc.join(timeout=5)
    assert not assoc.is_alive()


def test_many_stores_beside_a_busy_fetch_all_get_answers(orthanc_a, orthanc_b, local_config):
    """The load under which pynetdicom's pause race lost answers ("no response")."""
    from adit.core.dicom.query import QueryDataset
    from adit.core.dicom.testing.synthetic import make_study

    from .conftest import new_patient_id

    study = make_study(new_patient_id("RACE"), series=(("CT", 60), ("MR", 60)))
    orthanc_a.upload(study)
    source = DimseConnector(orthanc_a.server_config(), local_config)
    destination = DimseConnector(orthanc_b.server_config(), local_config)
    query = QueryDataset.create(
        QueryRetrieveLevel="STUDY",
        PatientID=study[0].PatientID,
        StudyInstanceUID=study[0].StudyInstanceUID,
    )
    result = destination.send_c_store(source.send_c_get(query))
    assert result.stored == len(study)
    assert orthanc_b.study_instance_uids(study[0].StudyInstanceUID) == {
        ds.SOPInstanceUID for ds in study
    }


def test_a_message_queued_after_our_abort_is_dropped_quietly(orthanc_b, local_config):
    connector = DimseConnector(orthanc_b.server_config(), local_config)
    assoc = _open(connector)
    assoc.abort()
    machine = assoc.dul.state_machine
    # The moment a sub-operation's answer is queued while the abort is under way.
    machine.current_state = "Sta13"
    machine.do_action("Evt9")  # pynetdicom would raise InvalidEventError here
    machine.current_state = "Sta1"
    with pytest.raises(InvalidEventError):
        machine.do_action("Evt9")  # other invalid events still raise
