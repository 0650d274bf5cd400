"""Associations kept for the next operation (`net/pool.py`), against real Orthanc instances.

A TCP proxy in front of Orthanc counts the connections ADIT opens: one association is one
connection, so the count is the number of associations Orthanc saw.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adit.core.dicom.dimse import DimseConnector
from adit.core.dicom.net.pool import AssociationPool
from adit.core.dicom.query import QueryDataset
from adit.core.dicom.testing.peers import OrthancInstance, require_orthanc
from adit.core.dicom.testing.synthetic import make_study
from adit.core.testing import wait_until
from adit.core.testing.proxy import CountingProxy

from .conftest import new_patient_id

pytestmark = pytest.mark.peers


def study_query(datasets) -> QueryDataset:
    return QueryDataset.create(
        QueryRetrieveLevel="STUDY", StudyInstanceUID=datasets[0].StudyInstanceUID
    )


@pytest.fixture
def pooled(local_config):
    """A factory of connectors that talk to a server through a counting proxy with a pool."""
    opened: list[tuple[CountingProxy, AssociationPool]] = []

    def make(orthanc: OrthancInstance, idle_seconds: float = 30.0):
        proxy = CountingProxy(orthanc.dicom_port).__enter__()
        pool = AssociationPool(idle_seconds)
        opened.append((proxy, pool))

        def connector() -> DimseConnector:
            dimse = DimseConnector(orthanc.server_config(port=proxy.port), local_config)
            dimse.pool = pool
            return dimse

        return proxy, pool, connector

    yield make
    for proxy, pool in opened:
        pool.close_all()
        proxy.__exit__(None, None, None)


@pytest.fixture
def orthanc_closing_idle_associations(tmp_path) -> Iterator[OrthancInstance]:
    """An Orthanc of its own that closes an association after 1 s without a request."""
    require_orthanc()
    orthanc = OrthancInstance(
        "ORTHANC_IDLE", base_dir=tmp_path / "orthanc", extra_config={"DicomScpTimeout": 1}
    )
    orthanc.start()
    try:
        yield orthanc
    finally:
        orthanc.stop()


def test_consecutive_operations_of_new_connectors_share_one_association(orthanc_a, pooled):
    proxy, pool, connector = pooled(orthanc_a)
    study = make_study(new_patient_id("POOL"), series=(("CR", 2),))
    connector().send_c_store(study)
    stores = proxy.total

    for _ in range(3):  # as three tasks would: a connector each, one after the other
        found = list(connector().send_c_find(study_query(study)))
        assert [r.StudyInstanceUID for r in found] == [study[0].StudyInstanceUID]
    assert proxy.total == stores + 1, "the three C-FINDs did not share one association"
    assert pool.reused == 2

    fetched = list(connector().send_c_get(study_query(study)))
    fetched_again = list(connector().send_c_get(study_query(study)))
    assert len(fetched) == len(fetched_again) == 2
    assert proxy.total == stores + 2
    # Open now: the idle C-FIND and C-GET associations (and the C-STORE one), nothing else.
    assert pool.idle_count() == proxy.open_now == 3


def test_the_check_after_storing_runs_on_a_store_association(orthanc_a, pooled):
    proxy, pool, connector = pooled(orthanc_a)
    study = make_study(new_patient_id("POOL"), series=(("CR", 3),))
    connector().send_c_store(iter(study))  # an iterator: the broad proposal with the C-FIND models
    query = QueryDataset.create(
        QueryRetrieveLevel="IMAGE",
        StudyInstanceUID=study[0].StudyInstanceUID,
        SeriesInstanceUID=study[0].SeriesInstanceUID,
        SOPInstanceUID="",
    )
    held = {r.get_str("SOPInstanceUID") for r in connector().send_c_find(query)}
    assert held == {str(ds.SOPInstanceUID) for ds in study}
    assert proxy.total == 1
    assert pool.reused == 1


def test_an_association_the_peer_closed_while_idle_is_replaced(
    orthanc_closing_idle_associations, pooled
):
    orthanc = orthanc_closing_idle_associations
    proxy, pool, connector = pooled(orthanc)
    study = make_study(new_patient_id("POOL"), series=(("CR", 1),))
    connector().send_c_store(study)
    assert len(list(connector().send_c_find(study_query(study)))) == 1
    assert pool.idle_count() == 2
    idle = [entry.association for entry in pool._idle]
    # Orthanc ends both idle associations after its DicomScpTimeout (1 s).
    wait_until(
        lambda: not any(assoc.looks_alive() for assoc in idle),
        15,
        "Orthanc to close the idle associations",
    )

    assert len(list(connector().send_c_find(study_query(study)))) == 1
    assert pool.discarded_dead == 1
    assert pool.reused == 0
    assert proxy.total == 3


def test_idle_associations_are_released_after_the_idle_time(orthanc_a, pooled):
    proxy, pool, connector = pooled(orthanc_a, idle_seconds=0.5)
    query = QueryDataset.create(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.3.4.5.6")
    assert list(connector().send_c_find(query)) == []
    assert proxy.open_now == 1 and pool.idle_count() == 1
    wait_until(lambda: proxy.open_now == 0, 10, "the idle association to be released")
    assert pool.idle_count() == 0
    assert list(connector().send_c_find(query)) == []
    assert proxy.total == 2


def test_a_budget_bounds_what_stays_open(orthanc_a, local_config):
    """With a budget of one association, a new one of another proposal first releases the
    idle one (as a worker holding one slot of the server must)."""
    with CountingProxy(orthanc_a.dicom_port) as proxy:
        pool = AssociationPool(30, budget=lambda group: 1)
        try:
            dimse = DimseConnector(orthanc_a.server_config(port=proxy.port), local_config)
            dimse.pool = pool
            study = make_study(new_patient_id("POOL"), series=(("CR", 1),))
            dimse.send_c_store(study)
            assert pool.idle_count() == 1
            assert len(list(dimse.send_c_get(study_query(study)))) == 1
            assert pool.idle_count() == 1
            assert proxy.most_at_once() == 1
            assert proxy.total == 2
        finally:
            pool.close_all()


def test_a_consumer_that_stops_early_never_leaves_its_association_in_the_pool(orthanc_a, pooled):
    proxy, pool, connector = pooled(orthanc_a)
    study = make_study(new_patient_id("POOL"), series=(("CR", 3),))
    connector().send_c_store(study)
    before = pool.idle_count()
    query = QueryDataset.create(
        QueryRetrieveLevel="IMAGE",
        StudyInstanceUID=study[0].StudyInstanceUID,
        SeriesInstanceUID=study[0].SeriesInstanceUID,
        SOPInstanceUID="",
    )
    results = connector().send_c_find(query, limit_results=1)  # cancelled after one match
    assert len(list(results)) == 1
    assert pool.idle_count() == before
