"""What a peer answers ADIT, checked the way PS3.7 and PS3.8 say (a scripted raw peer).

Each test scripts the bytes a PACS sends back; ADIT must take a status by its category
(pynetdicom's tables), never read a missing Status as success, match Message ID Being Responded
To, accept data only on accepted contexts and one context per message, and put fragmented
command sets and several PDVs per PDU together.
"""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from adit.core.dicom.config import LocalConfig, ServerConfig, Timeouts
from adit.core.dicom.dimse import DimseConnector, _encode_for
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.net import association, commands
from adit.core.dicom.query import QueryDataset
from adit.core.dicom.testing.scripted_peer import command_pdu, p_data_tf, scripted_scp
from adit.core.dicom.testing.synthetic import make_study

LOCAL = LocalConfig(
    calling_ae_title="ADIT_TEST", timeouts=Timeouts(connection=5, acse=5, dimse=5, network=5)
)
US, UI = commands.us_element, commands.uid_element


def connector(port: int) -> DimseConnector:
    server = ServerConfig(
        name="Scripted",
        ae_title="SCRIPTED",
        host="127.0.0.1",
        port=port,
        study_root_find_support=True,
        study_root_get_support=True,
        store_scp_support=True,
    )
    return DimseConnector(server, LOCAL)


def instances(count: int = 1):
    study = make_study("SCRIPT-PAT", series=(("CT", count),), compressed_series=False)
    for ds in study:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return study


def store_rsp(
    request: commands.Message, status: int | None, message_id: int | None = None
) -> bytes:
    elements = [
        UI(commands.AFFECTED_SOP_CLASS_UID, request.ui(commands.AFFECTED_SOP_CLASS_UID)),
        US(commands.COMMAND_FIELD, commands.C_STORE_RSP),
        US(
            commands.MESSAGE_ID_BEING_RESPONDED_TO,
            request.us(commands.MESSAGE_ID) if message_id is None else message_id,
        ),
        US(commands.COMMAND_DATA_SET_TYPE, commands.NO_DATA_SET),
    ]
    if status is not None:
        elements.append(US(commands.STATUS, status))
    elements.append(
        UI(commands.AFFECTED_SOP_INSTANCE_UID, request.ui(commands.AFFECTED_SOP_INSTANCE_UID))
    )
    return commands.command_set(*elements)


# --- C-STORE statuses by category ---------------------------------------------------------


@pytest.mark.parametrize(
    "status, stored, warned",
    [
        (0x0000, True, False),
        (0x0001, True, True),
        (0xB000, True, True),
        (0xB007, True, True),
        (0x0107, True, True),
        (0x0116, True, True),
        (0xA700, False, False),
        (0xC000, False, False),
        (0x0124, False, False),
        (0xFF00, False, False),  # pending is no answer to a C-STORE
        (0xFF01, False, False),
    ],
    ids=lambda value: f"{value:04X}" if isinstance(value, int) and value > 1 else None,
)
def test_c_store_status_is_taken_by_its_category(status, stored, warned):
    def script(assoc, request):
        return command_pdu(request.context_id, store_rsp(request, status))

    with scripted_scp(script) as (_, port):
        store = connector(port)
        if stored:
            result = store.send_c_store(instances())
            assert result.stored == 1
            assert bool(store.warnings) == warned
            if warned:
                assert f"0x{status:04X} (Warning" in store.warnings[0]
        else:
            with pytest.raises(RetriableDicomError, match="1 of 1 instances failed"):
                store.send_c_store(instances())


def test_a_c_store_answer_without_status_is_not_success():
    def script(assoc, request):
        return command_pdu(request.context_id, store_rsp(request, None))

    with scripted_scp(script) as (_, port), pytest.raises(RetriableDicomError, match="answer"):
        connector(port).send_c_store(instances())


def test_a_c_store_answer_to_another_message_is_refused():
    def script(assoc, request):
        return command_pdu(request.context_id, store_rsp(request, 0x0000, message_id=999))

    with scripted_scp(script) as (_, port), pytest.raises(RetriableDicomError, match="answer"):
        connector(port).send_c_store(instances())


def test_a_fragmented_command_set_in_several_pdvs_of_one_pdu_is_understood():
    def script(assoc, request):
        command = store_rsp(request, 0x0000)
        thirds = [command[:10], command[10:30], command[30:]]
        return p_data_tf(
            (request.context_id, 0x01, thirds[0]),
            (request.context_id, 0x01, thirds[1]),
            (request.context_id, 0x03, thirds[2]),
        )

    with scripted_scp(script) as (_, port):
        assert connector(port).send_c_store(instances(3)).stored == 3


def test_a_message_spread_over_two_contexts_aborts_the_association():
    def script(assoc, request):
        command = store_rsp(request, 0x0000)
        other = next(c for c in assoc.accepted if c != request.context_id)
        return p_data_tf((request.context_id, 0x01, command[:10]), (other, 0x03, command[10:]))

    with scripted_scp(script) as (_, port), pytest.raises(RetriableDicomError, match="context"):
        connector(port).send_c_store(iter(instances()))  # an iterator: many contexts proposed


def test_a_pdv_on_a_context_that_was_never_accepted_aborts_the_association():
    def script(assoc, request):
        return command_pdu(255, store_rsp(request, 0x0000))

    with scripted_scp(script) as (_, port), pytest.raises(RetriableDicomError, match="context"):
        connector(port).send_c_store(instances())


# --- C-FIND -------------------------------------------------------------------------------


def find_rsp(request: commands.Message, status: int | None, message_id: int = 1) -> bytes:
    elements = [
        UI(commands.AFFECTED_SOP_CLASS_UID, request.ui(commands.AFFECTED_SOP_CLASS_UID)),
        US(commands.COMMAND_FIELD, commands.C_FIND_RSP),
        US(commands.MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        US(commands.COMMAND_DATA_SET_TYPE, commands.NO_DATA_SET),
    ]
    if status is not None:
        elements.append(US(commands.STATUS, status))
    return commands.command_set(*elements)


def study_query() -> QueryDataset:
    return QueryDataset.create(QueryRetrieveLevel="STUDY", PatientID="SCRIPT-PAT")


@pytest.mark.parametrize(
    "answer, problem",
    [
        ({"status": None}, "answer without a Status"),
        ({"status": 0x0000, "message_id": 7}, "not to the request 1"),
    ],
    ids=["missing status", "wrong message id"],
)
def test_a_malformed_c_find_answer_is_an_error_not_an_empty_result(answer, problem):
    def script(assoc, request):
        return command_pdu(request.context_id, find_rsp(request, **answer))

    with scripted_scp(script) as (_, port), pytest.raises(RetriableDicomError, match=problem):
        list(connector(port).send_c_find(study_query()))


@pytest.mark.parametrize(
    "status, outcome",
    [(0x0000, "done"), (0xFE00, "done"), (0xB000, "warning"), (0xA700, "retriable")],
    ids=["success", "cancel", "warning", "out of resources"],
)
def test_c_find_final_status_is_taken_by_its_category(status, outcome):
    def script(assoc, request):
        return command_pdu(request.context_id, find_rsp(request, status))

    with scripted_scp(script) as (_, port):
        find = connector(port)
        if outcome == "retriable":
            with pytest.raises(RetriableDicomError, match="0xA700"):
                list(find.send_c_find(study_query()))
            return
        assert list(find.send_c_find(study_query())) == []
        assert bool(find.warnings) == (outcome == "warning")


# --- C-MOVE: the C-FIND loop with sub-operation counts -------------------------------------


def move_rsp(
    request: commands.Message,
    status: int | None,
    completed: int = 0,
    failed: int = 0,
    warning: int = 0,
    remaining: int | None = None,
    message_id: int = 1,
) -> bytes:
    elements = [
        UI(commands.AFFECTED_SOP_CLASS_UID, request.ui(commands.AFFECTED_SOP_CLASS_UID)),
        US(commands.COMMAND_FIELD, commands.C_MOVE_RSP),
        US(commands.MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        US(commands.COMMAND_DATA_SET_TYPE, commands.NO_DATA_SET),
    ]
    if status is not None:
        elements.append(US(commands.STATUS, status))
    if remaining is not None:
        elements.append(US(commands.REMAINING_SUBOPERATIONS, remaining))
    elements += [
        US(commands.COMPLETED_SUBOPERATIONS, completed),
        US(commands.FAILED_SUBOPERATIONS, failed),
        US(commands.WARNING_SUBOPERATIONS, warning),
    ]
    return commands.command_set(*elements)


def move_connector(port: int) -> DimseConnector:
    server = ServerConfig(
        name="Scripted",
        ae_title="SCRIPTED",
        host="127.0.0.1",
        port=port,
        study_root_move_support=True,
    )
    return DimseConnector(server, LOCAL)


def move_query() -> QueryDataset:
    return QueryDataset.create(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.3.4")


def test_c_move_names_the_move_destination_and_follows_pending_responses_to_the_end():
    seen: list[tuple[int, str]] = []

    def script(assoc, request):
        destination = request.command[commands.MOVE_DESTINATION].decode().strip()
        seen.append((request.command_field, destination))
        return b"".join(
            command_pdu(request.context_id, answer)
            for answer in (
                move_rsp(request, 0xFF00, completed=1, remaining=2),
                move_rsp(request, 0xFF00, completed=2, remaining=1),
                move_rsp(request, 0x0000, completed=3),
            )
        )

    with scripted_scp(script) as (_, port):
        move = move_connector(port)
        result = move.send_c_move(move_query(), "ADIT_RECV")
    assert seen == [(commands.C_MOVE_RQ, "ADIT_RECV")]
    assert (result.completed, result.failed, result.warning) == (3, 0, 0)
    assert move.warnings == []


@pytest.mark.parametrize(
    "status, counts, outcome",
    [
        (0x0000, (5, 0, 0), "done"),
        (0xFE00, (2, 0, 0), "done"),
        (0xB000, (4, 1, 0), "warning"),
        (0xA701, (0, 0, 0), "retriable"),
        (0xA702, (0, 0, 0), "retriable"),
        (0xA801, (0, 0, 0), "move destination unknown"),
        (0xA900, (0, 0, 0), "failed"),
        (0xC000, (0, 0, 0), "failed"),
    ],
    ids=["success", "cancel", "warning", "A701", "A702", "A801", "A900", "C000"],
)
def test_c_move_final_status_is_taken_by_its_category(status, counts, outcome):
    completed, failed, warning = counts

    def script(assoc, request):
        return command_pdu(
            request.context_id, move_rsp(request, status, completed, failed, warning)
        )

    with scripted_scp(script) as (_, port):
        move = move_connector(port)
        if outcome == "retriable":
            with pytest.raises(RetriableDicomError, match=f"0x{status:04X}"):
                move.send_c_move(move_query(), "ADIT_RECV")
        elif outcome == "move destination unknown":
            with pytest.raises(DicomError, match=outcome):
                move.send_c_move(move_query(), "ADIT_RECV")
        elif outcome == "failed":
            with pytest.raises(DicomError, match=f"0x{status:04X}") as raised:
                move.send_c_move(move_query(), "ADIT_RECV")
            assert not isinstance(raised.value, RetriableDicomError)
        else:
            result = move.send_c_move(move_query(), "ADIT_RECV")
            assert (result.completed, result.failed) == (completed, failed)
            assert bool(move.warnings) == (outcome == "warning")


@pytest.mark.parametrize(
    "answer, problem",
    [
        ({"status": None}, "answer without a Status"),
        ({"status": 0x0000, "message_id": 9}, "not to the request 1"),
    ],
    ids=["missing status", "wrong message id"],
)
def test_a_malformed_c_move_answer_is_an_error_not_a_success(answer, problem):
    def script(assoc, request):
        return command_pdu(request.context_id, move_rsp(request, completed=3, **answer))

    with scripted_scp(script) as (_, port), pytest.raises(RetriableDicomError, match=problem):
        move_connector(port).send_c_move(move_query(), "ADIT_RECV")


def test_c_move_reads_the_failed_sop_instance_uid_list_of_the_final_response():
    def script(assoc, request):
        command = move_rsp(request, 0xB000, completed=1, failed=2)
        # The identifier of a final response carries the Failed SOP Instance UID List.
        identifier = Dataset()
        identifier.FailedSOPInstanceUIDList = ["1.2.3.4.1", "1.2.3.4.2"]
        data = _encode_for(identifier, ImplicitVRLittleEndian)
        command = command.replace(
            US(commands.COMMAND_DATA_SET_TYPE, commands.NO_DATA_SET),
            US(commands.COMMAND_DATA_SET_TYPE, commands.DATA_SET_PRESENT),
        )
        return command_pdu(request.context_id, command) + p_data_tf(
            (request.context_id, 0x02, data)
        )

    with scripted_scp(script) as (_, port):
        move = move_connector(port)
        result = move.send_c_move(move_query(), "ADIT_RECV")
    assert result.failed_sop_instance_uids == ["1.2.3.4.1", "1.2.3.4.2"]
    assert "2 failed" in move.warnings[0]


# --- C-ECHO ---------------------------------------------------------------------------------


def echo_rsp(request: commands.Message, status: int | None, message_id: int = 1) -> bytes:
    elements = [
        UI(commands.AFFECTED_SOP_CLASS_UID, request.ui(commands.AFFECTED_SOP_CLASS_UID)),
        US(commands.COMMAND_FIELD, commands.C_ECHO_RSP),
        US(commands.MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        US(commands.COMMAND_DATA_SET_TYPE, commands.NO_DATA_SET),
    ]
    if status is not None:
        elements.append(US(commands.STATUS, status))
    return commands.command_set(*elements)


@pytest.mark.parametrize(
    "answer, error",
    [
        ({"status": 0x0000}, None),
        ({"status": 0x0110}, "0x0110"),
        ({"status": None}, "answer without a Status"),
        ({"status": 0x0000, "message_id": 2}, "not to the request 1"),
    ],
    ids=["success", "processing failure", "missing status", "wrong message id"],
)
def test_c_echo_answer_is_checked_like_any_other(answer, error):
    def script(assoc, request):
        assert request.command_field == commands.C_ECHO_RQ
        return command_pdu(request.context_id, echo_rsp(request, **answer))

    with scripted_scp(script) as (_, port):
        if error is None:
            connector(port).send_c_echo()
        else:
            with pytest.raises(DicomError, match=error):
                connector(port).send_c_echo()


# --- ADIT names itself ----------------------------------------------------------------------


def test_adit_announces_its_own_implementation_class_uid_and_version_name():
    import socket
    import struct
    import threading

    from pynetdicom.pdu import A_ASSOCIATE_RQ

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    requests: list = []

    def capture() -> None:
        for _ in range(2):
            sock, _ = listener.accept()
            with sock:
                header = sock.recv(6, socket.MSG_WAITALL)
                length = struct.unpack(">I", header[2:])[0]
                body = sock.recv(length, socket.MSG_WAITALL)
                pdu = A_ASSOCIATE_RQ()
                pdu.decode(header + body)
                requests.append(pdu.to_primitive())

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    with pytest.raises(RetriableDicomError):  # ADIT's own upper layer (C-STORE)
        connector(port).send_c_store(instances())
    with pytest.raises(RetriableDicomError):  # C-ECHO, on the same upper layer
        connector(port).send_c_echo()
    thread.join(10)
    listener.close()

    assert len(requests) == 2
    for request in requests:
        items = {type(item).__name__: item for item in request.user_information}
        uid = items["ImplementationClassUIDNotification"].implementation_class_uid
        name = items["ImplementationVersionNameNotification"].implementation_version_name
        assert uid == association.IMPLEMENTATION_CLASS_UID and uid.startswith("2.25.")
        assert name in ("ADIT_0_1", b"ADIT_0_1")


# --- C-GET: the SCP/SCU role selection answer is honoured -----------------------------------


def get_rsp(request: commands.Message, status: int) -> bytes:
    return commands.command_set(
        UI(commands.AFFECTED_SOP_CLASS_UID, request.ui(commands.AFFECTED_SOP_CLASS_UID)),
        US(commands.COMMAND_FIELD, commands.C_GET_RSP),
        US(commands.MESSAGE_ID_BEING_RESPONDED_TO, 1),
        US(commands.COMMAND_DATA_SET_TYPE, commands.NO_DATA_SET),
        US(commands.STATUS, status),
        US(commands.COMPLETED_SUBOPERATIONS, 0),
        US(commands.FAILED_SUBOPERATIONS, 0),
        US(commands.WARNING_SUBOPERATIONS, 0),
    )


def get_query() -> QueryDataset:
    return QueryDataset.create(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.3.4")


@pytest.mark.parametrize("grants_scp_role", [True, False], ids=["granted", "refused"])
def test_c_get_honours_the_scp_role_answer(grants_scp_role):
    ct = "1.2.840.10008.5.1.4.1.1.2"
    requests: list[int] = []

    def script(assoc, request):
        requests.append(request.command_field)
        return command_pdu(request.context_id, get_rsp(request, 0x0000))

    refused = frozenset() if grants_scp_role else {ct}
    with scripted_scp(script, scp_role_refused_for=frozenset(refused)) as (_, port):
        get = connector(port)
        if grants_scp_role:
            assert list(get.send_c_get(get_query(), sop_classes=[ct])) == []
            assert requests == [commands.C_GET_RQ]
            return
        with pytest.raises(DicomError, match=rf"{ct} \(CT Image Storage\)") as raised:
            list(get.send_c_get(get_query(), sop_classes=[ct]))
    assert "SCP role refused" in str(raised.value)
    assert not isinstance(raised.value, RetriableDicomError)  # C-MOVE may do it instead
    assert requests == []  # nothing was asked for that could not arrive


@pytest.mark.parametrize("pending", [0xFF00, 0xFF01], ids=["FF00", "FF01"])
def test_c_find_matches_of_both_pending_statuses_are_results(pending):
    """FF01: a match whose optional keys the PACS did not all support is still a match."""

    def script(assoc, request):
        match = Dataset()
        match.QueryRetrieveLevel = "STUDY"
        match.PatientID = "SCRIPT-PAT"
        match.StudyInstanceUID = "1.2.3.4"
        command = find_rsp(request, pending).replace(
            US(commands.COMMAND_DATA_SET_TYPE, commands.NO_DATA_SET),
            US(commands.COMMAND_DATA_SET_TYPE, commands.DATA_SET_PRESENT),
        )
        return (
            command_pdu(request.context_id, command)
            + p_data_tf((request.context_id, 0x02, _encode_for(match, ImplicitVRLittleEndian)))
            + command_pdu(request.context_id, find_rsp(request, 0x0000))
        )

    with scripted_scp(script) as (_, port):
        find = connector(port)
        results = list(find.send_c_find(study_query()))
    assert [result.StudyInstanceUID for result in results] == ["1.2.3.4"]
    assert find.warnings == []
